//! Reaching the cluster and learning a topic's partitions, with backoff until
//! shutdown: a producer may start before its cluster does.

use tokio_util::sync::CancellationToken;

use super::route::Route;
use super::{ProducerError, ProducerSettings};
use crate::kafka::retry::{Backoff, Deadline};

/// The topic's partition count, asked until the cluster answers or `shutdown`.
pub(super) async fn partition_count(
    route: &Route,
    topic: &str,
    settings: &ProducerSettings,
    shutdown: &CancellationToken,
) -> Result<i32, ProducerError> {
    let mut backoff = Backoff::new(settings.retry_backoff, settings.retry_backoff_max);
    // A topic just created reaches every broker's metadata a moment later: a
    // broker that does not know it yet is asked again until this deadline,
    // counted from the cluster's first answer.
    let mut missing_deadline = None;
    loop {
        match route.partition_count().await {
            Ok(Some(count)) if count > 0 => return Ok(count),
            Ok(_) => {
                let deadline = *missing_deadline
                    .get_or_insert_with(|| Deadline::after(settings.request_timeout));
                if deadline.has_passed() {
                    return Err(ProducerError::MissingTopic(topic.to_string()));
                }
                tracing::debug!("topic {topic} not in the metadata yet; asking again");
            }
            Err(e) if e.is_permanent() => {
                return Err(ProducerError::Refused(format!("topic {topic}: {e}")));
            }
            Err(e) => tracing::warn!("cannot learn {topic}'s partitions: {e}; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(ProducerError::Cancelled(topic.to_string())),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
