//! The pipeline's stages, wired from the library's parts.
//!
//! - [`ingest`]: simulated readings -> producer -> Kafka.

pub mod ingest;
