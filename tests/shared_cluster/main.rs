//! The integration tests that share one real 3-node cluster, in one test
//! binary so that the cluster starts once: each test makes topics and groups of
//! its own, so none sees another's data. Tests that stop brokers on purpose
//! take a cluster of their own and live in their own binaries
//! (`node_failure.rs`, `chaos.rs`, `console_browser.rs`).

#[path = "../common/mod.rs"]
mod common;

mod aggregate;
mod cluster;
mod console;
mod consumer;
mod history_console;
mod pipeline;
mod produce_fetch;
mod producer;
mod record_schema;
mod store;
mod store_postgres;
mod topics;
