//! How one variable's text becomes a value, and back.
//!
//! Each parser returns the value or a description of what is allowed; the
//! caller adds the variable and the value given, so every error names all
//! three. Each printer writes a value the way its parser reads it, so the
//! output of `metrocloud config` can be used as an `.env` file as it is.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::kafka::BrokerAddress;
use crate::sensor::device::DeviceType;
use crate::sensor::fault::FaultKind;
use crate::store::StoreKind;

/// What a parser says when a value is refused: what the variable allows.
pub type Allowed = String;

/// Any `FromStr` value, trimmed.
pub fn parsed<T: FromStr>(given: &str, allowed: &str) -> Result<T, Allowed> {
    given.trim().parse().map_err(|_| allowed.to_string())
}

/// A whole number within `min..=max`.
pub fn whole<T>(given: &str, min: T, max: T) -> Result<T, Allowed>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    let allowed = format!("a whole number from {min} to {max}");
    let value: T = parsed(given, &allowed)?;
    if value < min || value > max {
        return Err(allowed);
    }
    Ok(value)
}

/// Milliseconds from `min` to a day.
pub fn millis(given: &str, min: u64) -> Result<Duration, Allowed> {
    whole(given, min, 86_400_000).map(Duration::from_millis)
}

/// Whole seconds from 0 to `max`.
pub fn seconds(given: &str, max: u64) -> Result<Duration, Allowed> {
    whole(given, 0, max).map(Duration::from_secs)
}

/// `parquet`, `postgres` or `off`.
pub fn store_kind(given: &str) -> Result<StoreKind, Allowed> {
    match given.trim() {
        "parquet" => Ok(StoreKind::Parquet),
        "postgres" => Ok(StoreKind::Postgres),
        "off" => Ok(StoreKind::Off),
        _ => Err("parquet, postgres or off".to_string()),
    }
}

/// How [`store_kind`] reads it.
pub fn show_store_kind(kind: &StoreKind) -> String {
    match kind {
        StoreKind::Parquet => "parquet",
        StoreKind::Postgres => "postgres",
        StoreKind::Off => "off",
    }
    .to_string()
}

/// A finite number.
pub fn number(given: &str) -> Result<f64, Allowed> {
    let value: f64 = parsed(given, "a number")?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err("a finite number".to_string())
    }
}

/// How many usual gaps make a device silent: more than 1.
pub fn silence_gaps(given: &str) -> Result<f64, Allowed> {
    let allowed = "a number above 1 and at most 1000";
    let value = number(given).map_err(|_| allowed.to_string())?;
    if value > 1.0 && value <= 1000.0 {
        Ok(value)
    } else {
        Err(allowed.to_string())
    }
}

/// A probability.
pub fn probability(given: &str) -> Result<f64, Allowed> {
    let allowed = "a probability between 0.0 and 1.0";
    let value: f64 = parsed(given, allowed)?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(allowed.to_string())
    }
}

/// A positive number of seconds, at most a day, fractions allowed.
pub fn interval(given: &str) -> Result<Duration, Allowed> {
    let allowed = "a number of seconds greater than 0 and at most 86400 (e.g. 0.5)";
    let secs: f64 = parsed(given, allowed)?;
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(allowed.to_string())
    }
}

/// Kafka's own rule for topic names: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn topic_name(given: &str) -> Result<String, Allowed> {
    let allowed = "a topic name of 1 to 249 characters from a-z, A-Z, 0-9, '.', '_', '-'";
    let valid_chars = given
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if given.is_empty() || given.len() > 249 || !valid_chars || given == "." || given == ".." {
        Err(allowed.to_string())
    } else {
        Ok(given.to_string())
    }
}

/// Any text that is not blank.
pub fn non_empty(given: &str) -> Result<String, Allowed> {
    if given.trim().is_empty() {
        Err("a non-empty value".to_string())
    } else {
        Ok(given.to_string())
    }
}

/// `on` or `off`.
pub fn on_off(given: &str) -> Result<bool, Allowed> {
    match given.trim().to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("on or off".to_string()),
    }
}

/// A switch as `on` or `off`.
pub fn show_on_off(value: &bool) -> String {
    if *value { "on" } else { "off" }.to_string()
}

/// Bytes, in whole MiB.
pub fn show_mebibytes(value: &u64) -> String {
    (value / (1024 * 1024)).to_string()
}

/// Any text, as given.
pub fn text(given: &str) -> Result<String, Allowed> {
    Ok(given.to_string())
}

/// A path; empty means "not set".
pub fn optional_path(given: &str) -> Result<Option<PathBuf>, Allowed> {
    Ok((!given.trim().is_empty()).then(|| PathBuf::from(given)))
}

/// Text; empty means "not set".
pub fn optional_text(given: &str) -> Result<Option<String>, Allowed> {
    Ok((!given.trim().is_empty()).then(|| given.to_string()))
}

/// A seed; empty means "pick one at random".
pub fn seed(given: &str) -> Result<Option<u64>, Allowed> {
    if given.trim().is_empty() {
        return Ok(None);
    }
    parsed(
        given,
        "a whole number from 0 to 18446744073709551615, or nothing for a random seed",
    )
    .map(Some)
}

/// A comma-separated list of device types, without repeats.
pub fn device_types(given: &str) -> Result<Vec<DeviceType>, Allowed> {
    names_list(given, &DeviceType::ALL, DeviceType::as_str, "device types")
}

/// A comma-separated list of sensor fault kinds, without repeats.
pub fn fault_kinds(given: &str) -> Result<Vec<FaultKind>, Allowed> {
    names_list(given, &FaultKind::ALL, FaultKind::as_str, "fault kinds")
}

/// A comma-separated, non-empty list of names from `all`, without repeats.
fn names_list<T: FromStr + PartialEq + Copy>(
    given: &str,
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
) -> Result<Vec<T>, Allowed> {
    let names: Vec<&str> = all.iter().map(|t| name(*t)).collect();
    let allowed = format!("a comma-separated list of {what} from {}", names.join(", "));
    let mut picked = Vec::new();
    for part in given.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let item: T = part.parse().map_err(|_| allowed.clone())?;
        if !picked.contains(&item) {
            picked.push(item);
        }
    }
    if picked.is_empty() {
        return Err(allowed);
    }
    Ok(picked)
}

/// A comma-separated list of `host:port`.
pub fn bootstrap_servers(given: &str) -> Result<Vec<BrokerAddress>, Allowed> {
    let allowed = "a comma-separated list of host:port (e.g. localhost:29092,localhost:29093)";
    let servers: Result<Vec<_>, _> = given
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<BrokerAddress>().map_err(|_| allowed))
        .collect();
    match servers {
        Ok(servers) if !servers.is_empty() => Ok(servers),
        _ => Err(allowed.to_string()),
    }
}

/// A value as its `Display` writes it.
pub fn show<T: Display>(value: &T) -> String {
    value.to_string()
}

/// Milliseconds.
pub fn show_millis(value: &Duration) -> String {
    value.as_millis().to_string()
}

/// Whole seconds.
pub fn show_seconds(value: &Duration) -> String {
    value.as_secs().to_string()
}

/// Seconds with their fraction.
pub fn show_interval(value: &Duration) -> String {
    value.as_secs_f64().to_string()
}

/// A list, comma-separated.
pub fn show_list<T: Display>(values: &[T]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// An optional value; empty when unset.
pub fn show_optional<T: Display>(value: &Option<T>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// An optional path; empty when unset.
/// A password prints as nothing; only whether it is set is ever shown.
pub fn show_password(value: &Option<crate::kafka::security::Password>) -> String {
    value
        .as_ref()
        .map(|p| p.expose().to_string())
        .unwrap_or_default()
}

pub fn show_optional_path(value: &Option<PathBuf>) -> String {
    value
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// A path.
pub fn show_path(value: &Path) -> String {
    value.display().to_string()
}
