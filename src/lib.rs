//! MetroCloud: IoT sensor-data ingestion on Apache Kafka, in pure Rust.
//!
//! The library holds everything; the binaries under `bin/` only call it. The
//! modules are layered, and each uses only the ones listed before it:
//!
//! - [`kafka`]: our async Kafka client library over rskafka and kafka-protocol:
//!   producer, group consumer, admin requests, topic setup. It knows nothing of
//!   sensors.
//! - [`sensor`]: the domain: device types, the reading and its decoder,
//!   validation, the simulator, and the alert rules.
//! - [`spool`]: an append-only, checksummed queue on disk with group commit,
//!   for what a gateway holds until Kafka acknowledges it.
//! - [`store`]: readings kept in Parquet files, each exactly once, for
//!   querying after Kafka's retention. It knows readings, not Kafka's clients.
//! - [`config`]: the environment, validated once, into the settings of the
//!   layers below.
//! - [`pipeline`]: sources through processing into sinks, the audits, and the
//!   orchestration of `metrocloud run`.
//! - [`cluster`]: a real local Kafka cluster, as JVM processes, with no Docker.
//! - [`gateway`]: real devices in over MQTT and HTTP, through a disk buffer,
//!   into the sensor topic.
//! - [`console`]: the monitoring console.
//! - [`chaos`]: fault scenarios on a cluster of their own, judged by the delivery audit.
//! - [`bench`](mod@bench): our clients beside Kafka's perf tools, same cluster, same run.
//! - [`cli`]: the `metrocloud` command line.
//!
//! [`logging`], [`shutdown`], [`lock`] and [`exposition`] are plumbing every layer may use.

// Module docs explain a layer's parts and link to its private modules:
// `cargo doc --document-private-items` resolves those links.
#![allow(rustdoc::private_intra_doc_links)]

pub mod exposition;
pub mod idle;
pub mod intern;
pub mod lock;

pub mod kafka;
pub mod sensor;
pub mod spool;
pub mod store;

pub mod config;
pub mod logging;
pub mod shutdown;

pub mod pipeline;

pub mod bench;
pub mod chaos;
pub mod cluster;
pub mod console;
pub mod gateway;

pub mod cli;
