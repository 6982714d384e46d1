//! MetroCloud: IoT sensor-data ingestion on Apache Kafka, in pure Rust.
//!
//! The library holds everything; the binaries under `bin/` only call it.
//!
//! - [`config`]: the environment, validated once.
//! - [`logging`]: console and production log files.
//! - [`device`]: the kinds of sensor.
//! - [`reading`]: the record format of a sensor reading.
//! - [`simulator`]: a fleet of simulated sensors.
//! - [`partitioner`]: Kafka's default partitioning of keyed records.
//! - [`pipeline`]: the stages wired together: ingest, processing, alerts, audits.
//! - [`producer`]: batching, bounded buffering and retries around rskafka.
//! - [`client`]: the shared rskafka client, replaced when a frozen broker hangs it.
//! - [`consumer`]: a consumer group member (KIP-848) that commits after processing.
//! - [`admin`]: cluster requests rskafka lacks (topic configs, quorum, full metadata).
//! - [`topics`]: making sure the sensor topic exists and is durable.
//! - [`cluster`]: a real local Kafka cluster, as JVM processes, with no Docker.
//! - [`bench`]: our clients beside Kafka's perf tools, same cluster, same run.
//! - [`chaos`]: fault scenarios on a cluster of their own, judged by the delivery audit.
//! - [`nodelay`]: TCP_NODELAY on rskafka's connections.
//! - [`shutdown`]: SIGINT/SIGTERM into a shutdown token.
//! - [`retry`]: backoff and deadlines.
//! - [`cli`]: the `metrocloud` command line.

pub mod admin;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod consumer;
pub mod device;
pub mod logging;
pub mod nodelay;
pub mod partitioner;
pub mod pipeline;
pub mod producer;
pub mod reading;
pub mod retry;
pub mod shutdown;
pub mod simulator;
pub mod topics;
