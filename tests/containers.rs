//! The producer, group-consumer and pipeline tests of `tests/shared_cluster/`,
//! against three Kafka containers that testcontainers starts (from
//! `KAFKA_IMAGE`, by default `apache/kafka:4.1.1`):
//!
//! ```sh
//! KAFKA_IMAGE=metrocloud-kafka:4.1.1 cargo test --features testcontainers --test containers
//! ```
//!
//! Without a Docker engine, or without the image, every test fails saying
//! which is missing; without the feature this binary holds no test.
#![cfg(feature = "testcontainers")]

#[path = "common/mod.rs"]
mod common;

#[path = "shared_cluster/consumer.rs"]
mod consumer;
#[path = "shared_cluster/pipeline.rs"]
mod pipeline;
#[path = "shared_cluster/producer.rs"]
mod producer;

#[test]
fn broker_settings_are_named_as_the_official_image_reads_them() {
    assert_eq!(
        common::docker::variable_for("group.consumer.session.timeout.ms"),
        "KAFKA_GROUP_CONSUMER_SESSION_TIMEOUT_MS"
    );
    assert_eq!(
        common::docker::variable_for("listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config"),
        "KAFKA_LISTENER_NAME_SASL__SSL_SCRAM___SHA___256_SASL_JAAS_CONFIG"
    );
}
