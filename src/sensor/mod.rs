//! The domain: what a sensor is, what it reports, and when a report is alarming.
//!
//! Nothing here knows Kafka: a reading is decoded from bytes and judged by
//! rules, whichever transport brought it.
//!
//! - [`aggregate`]: per-device minute aggregates, exact across crashes.
//! - [`device`]: the kinds of sensor.
//! - [`reading`]: the record format of a sensor reading, and its decoders.
//! - [`validate`]: bytes -> a checked reading, or the reason it is refused.
//! - [`simulator`]: a fleet of simulated sensors.
//! - [`fault`]: the sensor faults it injects beside threshold anomalies.
//! - [`detect`]: a streaming per-device detector of those faults.
//! - [`rules`]: threshold, battery and silence rules, with episodes and a cooldown.

pub mod aggregate;
pub mod detect;
pub mod device;
pub mod fault;
pub mod reading;
pub mod rules;
pub mod simulator;
mod timestamp;
pub mod validate;
