//! Reaching the cluster and learning a topic's partitions, with backoff until
//! shutdown: a producer may start before its cluster does.

use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::Client;
use tokio_util::sync::CancellationToken;

use super::{ProducerError, ProducerSettings};
use crate::kafka::client::SharedClient;
use crate::kafka::retry::{Backoff, Deadline};

pub(super) async fn connect_client(
    bootstrap: Vec<String>,
    settings: &ProducerSettings,
    shutdown: &CancellationToken,
) -> Result<SharedClient, ProducerError> {
    let joined = bootstrap.join(",");
    let retry = Backoff::new(
        settings.retry_backoff,
        settings.retry_backoff_max.max(Duration::from_secs(5)),
    );
    SharedClient::connect_until(
        bootstrap,
        "metrocloud-producer",
        rskafka_backoff(settings),
        settings.request_timeout,
        retry,
        shutdown,
    )
    .await
    .ok_or(ProducerError::Cancelled(joined))
}

pub(super) async fn partition_count(
    client: &Client,
    topic: &str,
    settings: &ProducerSettings,
    shutdown: &CancellationToken,
) -> Result<i32, ProducerError> {
    let mut backoff = Backoff::new(settings.retry_backoff, settings.retry_backoff_max);
    // A topic just created reaches every broker's metadata a moment later: a
    // broker that does not know it yet is asked again until this deadline.
    let missing_deadline = Deadline::after(settings.request_timeout);
    loop {
        match tokio::time::timeout(settings.request_timeout, client.list_topics()).await {
            Ok(Ok(topics)) => {
                let partitions = topics
                    .into_iter()
                    .find(|t| t.name == topic)
                    .map(|t| t.partitions.len() as i32)
                    .filter(|&n| n > 0);
                match partitions {
                    Some(n) => return Ok(n),
                    None if missing_deadline.has_passed() => {
                        return Err(ProducerError::MissingTopic(topic.to_string()));
                    }
                    None => tracing::debug!("topic {topic} not in the metadata yet; asking again"),
                }
            }
            Ok(Err(e)) => tracing::warn!("cannot list topics yet: {e}; retrying"),
            Err(_) => tracing::warn!("listing topics timed out; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(ProducerError::Cancelled(topic.to_string())),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// rskafka retries some errors itself; bound those retries tightly so that
/// the decision (a fresh client, the delivery deadline) stays here.
fn rskafka_backoff(settings: &ProducerSettings) -> BackoffConfig {
    BackoffConfig {
        init_backoff: settings.retry_backoff,
        max_backoff: settings.retry_backoff_max,
        base: 2.0,
        deadline: Some(crate::kafka::client::internal_retry_deadline(
            settings.request_timeout,
        )),
    }
}
