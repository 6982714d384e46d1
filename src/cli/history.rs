//! `metrocloud history DEVICE`: a device's readings, or its minute aggregates, from the store.

use chrono::{DateTime, TimeDelta, Utc};
use std::io::Write;

use clap::Args;

use super::CliError;
use crate::config::Config;
use crate::store::history::device_history;
use crate::store::minutes::device_minutes;

/// What `metrocloud history` is asked for.
#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// The device, e.g. temperature-000042.
    device: String,
    /// Start of the window: an RFC 3339 time (2026-12-02T18:00:00Z) or a time
    /// ago (90s, 30m, 6h, 2d).
    #[arg(long, default_value = "24h")]
    from: String,
    /// End of the window (excluded), in the same forms; "now" by default.
    #[arg(long, default_value = "0s")]
    to: String,
    /// The device's minute aggregates instead of its readings.
    #[arg(long)]
    aggregates: bool,
}

/// A time as given: RFC 3339, or a number of seconds, minutes, hours or days before `now`.
fn moment(given: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, CliError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(given) {
        return Ok(time.to_utc());
    }
    let refused = || {
        CliError::Usage(format!(
            "{given:?} is not a time: give RFC 3339 (2026-12-02T18:00:00Z) or a time ago (90s, 30m, 6h, 2d)"
        ))
    };
    let split = given.len().checked_sub(1).ok_or_else(refused)?;
    let (number, unit) = given.split_at(split);
    let number: i64 = number.parse().map_err(|_| refused())?;
    let ago = match unit {
        "s" => TimeDelta::try_seconds(number),
        "m" => TimeDelta::try_minutes(number),
        "h" => TimeDelta::try_hours(number),
        "d" => TimeDelta::try_days(number),
        _ => None,
    }
    .ok_or_else(refused)?;
    Ok(now - ago)
}

pub(crate) fn run(args: HistoryArgs, config: &Config) -> Result<(), CliError> {
    let now = Utc::now();
    let (from, to) = (moment(&args.from, now)?, moment(&args.to, now)?);
    if from >= to {
        return Err(CliError::Usage(format!(
            "the window is empty: --from {from} is not before --to {to}"
        )));
    }
    let data_dir = &config.store.data_dir;
    if args.aggregates {
        return print_minutes(&args.device, data_dir, from, to);
    }
    let readings = device_history(data_dir, &args.device, from, to)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    let (from, to) = (
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    writeln!(
        out,
        "{}: {} stored readings from {from} to {to} (in {}; readings still in open files appear once rolled)",
        args.device,
        readings.len(),
        data_dir.join(crate::store::layout::READINGS).display()
    )
    .map_err(printing)?;
    for reading in readings {
        let anomaly = reading
            .anomaly_kind
            .map(|kind| format!("  anomaly {kind}"))
            .unwrap_or_default();
        writeln!(
            out,
            "{}  seq {:>6}  {:>9.2} {:<6} {}{anomaly}",
            reading
                .event_time
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            reading.seq,
            reading.value,
            reading.unit,
            reading.status
        )
        .map_err(printing)?;
    }
    Ok(())
}

/// A failed write to standard output. A reader that stopped reading (`| head`)
/// is no error: the command ends there with exit status 0, as `head` expects.
fn printing(error: std::io::Error) -> CliError {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::Status(0)
    } else {
        CliError::Failed(format!("cannot print: {error}"))
    }
}

fn print_minutes(
    device: &str,
    data_dir: &std::path::Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), CliError> {
    let minutes =
        device_minutes(data_dir, device, from, to).map_err(|e| CliError::Failed(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{device}: {} stored minute aggregates from {} to {} (in {}; a minute appears once written and rolled)",
        minutes.len(),
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        data_dir.join(crate::store::layout::AGGREGATES).display()
    )
    .map_err(printing)?;
    for m in minutes {
        writeln!(
            out,
            "{}  count {:>4}  min {:>9.2}  max {:>9.2}  mean {:>9.2}  last {:>9.2} {:<6} anomalies {}",
            m.minute.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            m.count,
            m.min,
            m.max,
            m.mean,
            m.last,
            m.unit,
            m.anomalies
        )
        .map_err(printing)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_rfc_3339_or_a_time_ago() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T18:00:00Z")
            .unwrap()
            .to_utc();
        let at = |given| moment(given, now).map(|t| t.to_rfc3339());
        assert_eq!(
            at("2026-12-01T06:30:00Z").unwrap(),
            "2026-12-01T06:30:00+00:00"
        );
        assert_eq!(at("90s").unwrap(), "2026-12-02T17:58:30+00:00");
        assert_eq!(at("6h").unwrap(), "2026-12-02T12:00:00+00:00");
        assert_eq!(at("2d").unwrap(), "2026-11-30T18:00:00+00:00");
        for bad in ["", "h", "6y", "yesterday"] {
            assert!(matches!(moment(bad, now), Err(CliError::Usage(_))), "{bad}");
        }
    }
}
