//! The pipeline's stages, wired from the library's parts.
//!
//! - [`ingest`]: simulated readings -> producer -> Kafka.
//! - [`history`]: alerts a previous owner of a partition already sent.
//! - [`process`]: consumed records -> validation, dedupe, alerts, dead letters.
//! - [`reconcile`]: producer acknowledgements against consumer processing: lost, duplicated, late.
//! - [`wiring`]: building the stages from the configuration.
//! - [`audit`]: per-device sequence ledger: duplicates removed, gaps and reordering counted.

pub mod audit;
pub mod history;
pub mod ingest;
pub mod process;
pub mod reconcile;
pub mod wiring;
