//! Sources through processing into sinks, and the audits that prove nothing was lost.
//!
//! - [`sources`]: where readings come from: the simulated fleet today -> producer -> Kafka.
//! - [`process`]: consumed records -> validation, dedupe, alert rules -> a [`sink::Sink`].
//! - [`sink`]: what a sink promises; [`sinks`]: the sinks, one file each.
//! - [`observer`]: every processing outcome, for audits, the console and the processed log.
//! - [`audit`]: per-device sequence ledger: duplicates removed, gaps and reordering counted.
//! - [`reconcile`]: producer acknowledgements against consumer processing: lost, duplicated, late.
//! - [`aggregate`]: the aggregation stage: per-device minute aggregates to their topic, its own group.
//! - [`store`]: the storage stage: the sensor topic into the Parquet store, its own group.
//! - [`status`]: the status lines, and one line of alerts per interval.
//! - [`run`]: `produce`, `consume` and `run` as library calls, with their summaries.
//! - [`wiring`]: building the stages from the configuration.

pub mod aggregate;
pub mod audit;
pub mod observer;
pub mod process;
pub mod reconcile;
pub mod run;
pub mod sink;
pub mod sinks;
pub mod sources;
pub mod status;
pub mod store;
pub mod wiring;
