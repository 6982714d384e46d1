//! The kinds of sensor a MetroCloud fleet is made of.
//!
//! The set is closed on purpose: every reading, alert rule and unit in the
//! pipeline is keyed on it, so an unknown kind is rejected at configuration
//! time rather than discovered in the middle of a stream.

use std::fmt;
use std::str::FromStr;

/// A device id as the per-device tables key it. A fleet of a hundred
/// thousand devices keeps a table in each of the rules, the detector, the
/// ledgers, the console and the aggregator; with `String` keys that was an
/// allocation per device in each. Ids of up to 24 bytes (the simulator's
/// `<type>-<number>`, and most real ones) are held inline, longer ones on the heap.
pub type DeviceKey = compact_str::CompactString;

/// A table of per-device state. A hash map keeps its entries in its slots, a
/// power of two above the device count, and touches them all: 131,072 slots
/// for a fleet of 100,000. This table keeps the entries in a list, filled
/// only as far as there are devices, and in its slots only their 8-byte
/// positions; for a state of a few hundred bytes that is a quarter less
/// memory. Entries are in insertion order until one is removed (`swap_remove`
/// moves the last into its place); nothing relies on their order.
pub type DeviceTable<V> = indexmap::IndexMap<DeviceKey, V>;

/// One kind of sensor, with the unit its readings are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceType {
    /// Air temperature, in degrees Celsius.
    Temperature,
    /// Relative humidity, in percent.
    Humidity,
    /// Barometric pressure, in hectopascal.
    Pressure,
    /// Presence detection: 1 when motion is seen, 0 otherwise.
    Motion,
    /// Illuminance, in lux.
    Light,
}

impl DeviceType {
    /// Every kind, in the order the original design lists them.
    pub const ALL: [DeviceType; 5] = [
        DeviceType::Temperature,
        DeviceType::Humidity,
        DeviceType::Pressure,
        DeviceType::Motion,
        DeviceType::Light,
    ];

    /// The name used in configuration and in records.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Temperature => "temperature",
            DeviceType::Humidity => "humidity",
            DeviceType::Pressure => "pressure",
            DeviceType::Motion => "motion",
            DeviceType::Light => "light",
        }
    }

    /// The unit a reading of this kind is expressed in.
    pub fn unit(self) -> &'static str {
        match self {
            DeviceType::Temperature => "°C",
            DeviceType::Humidity => "%",
            DeviceType::Pressure => "hPa",
            DeviceType::Motion => "motion",
            DeviceType::Light => "lux",
        }
    }
}

impl fmt::Display for DeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device type name that is not one of [`DeviceType::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device type {0:?}")]
pub struct UnknownDeviceType(pub String);

impl FromStr for DeviceType {
    type Err = UnknownDeviceType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        DeviceType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == wanted)
            .ok_or_else(|| UnknownDeviceType(s.to_string()))
    }
}

impl serde::Serialize for DeviceType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for DeviceType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <String as serde::Deserialize>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ignore_case() {
        for kind in DeviceType::ALL {
            assert_eq!(kind.as_str().parse::<DeviceType>(), Ok(kind));
        }
        assert_eq!(" Light ".parse::<DeviceType>(), Ok(DeviceType::Light));
        assert!("thermostat".parse::<DeviceType>().is_err());
    }
}
