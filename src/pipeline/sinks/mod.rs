//! The sinks processing can write to, one file each.
//!
//! - [`kafka`]: alerts and dead letters to their Kafka topics (the pipeline's sink).
//! - [`memory`]: alerts and dead letters kept in memory, durable at once.

pub mod kafka;
pub mod memory;
