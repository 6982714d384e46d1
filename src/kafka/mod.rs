//! Our async Kafka client library, over rskafka and kafka-protocol.
//!
//! rskafka gives partition-level produce and fetch; this layer adds what an
//! application needs around it: batching with a bounded buffer and retries
//! within a delivery deadline, a consumer-group member that commits only what
//! was processed, the admin requests rskafka lacks, and making sure a topic
//! exists as configured. It has settings of its own and imports nothing from
//! the layers above it, so it could be a crate of its own.
//!
//! - [`producer`]: batching, bounded buffering, retries and an idempotent
//!   producer id, over our own Produce requests.
//! - [`headers`]: a record's headers, the same type produced and fetched.
//! - [`consumer`]: a consumer group member (KIP-848) that commits after processing.
//! - [`admin`]: cluster requests rskafka lacks (topic configs, quorum, full metadata, groups).
//! - [`client`]: the shared rskafka client, replaced when a frozen broker hangs it.
//! - [`topics`]: making sure a topic exists and is durable.
//! - [`partitioner`]: Kafka's default partitioning of keyed records.
//! - [`retry`]: backoff and deadlines.
//! - [`nodelay`]: TCP_NODELAY on rskafka's connections.
//! - [`security`]: security protocol, SASL credentials and TLS files, and
//!   the [`Brokers`] every client is given; [`transport`] opens the streams.

pub mod admin;
mod broker;
pub mod client;
pub mod consumer;
pub mod headers;
pub mod nodelay;
pub mod partitioner;
pub mod producer;
pub mod retry;
pub mod security;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topics;
pub mod transport;

pub use broker::BrokerAddress;
pub use headers::Headers;
pub use security::{Brokers, Security};
