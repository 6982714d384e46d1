//! Where readings come from, one file each.
//!
//! - [`simulator`]: the simulated fleet, followed against the wall clock into the producer.

pub mod simulator;
