//! `metrocloud health`: the container healthcheck, which needs no shell.
//!
//! Healthy means what the producer and consumer need: a broker answers
//! within the timeout, and the sensor topic exists with all its partitions
//! led. Exit status 0 when healthy, 1 otherwise, with one line saying which.

use std::time::Duration;

use super::CliError;
use crate::config::Config;
use crate::kafka::admin::{AdminClient, Timeouts};

/// How long the whole check may take; Docker's own timeout should be longer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn run(config: &Config) -> Result<(), CliError> {
    let timeouts = Timeouts {
        connect: Duration::from_secs(3),
        request: Duration::from_secs(5),
    };
    let admin = AdminClient::new(config.brokers(), timeouts);
    let topic = config.topic.as_str();
    let metadata = tokio::time::timeout(HEALTH_TIMEOUT, admin.metadata(Some(&[topic])))
        .await
        .map_err(|_| {
            CliError::Failed(format!(
                "unhealthy: no broker of {} answered within {HEALTH_TIMEOUT:?}",
                config.bootstrap_strings().join(",")
            ))
        })?
        .map_err(|e| CliError::Failed(format!("unhealthy: {e}")))?;
    let Some(info) = metadata.topic(topic) else {
        return Err(CliError::Failed(format!(
            "unhealthy: topic {topic} does not exist ({} brokers up)",
            metadata.brokers.len()
        )));
    };
    let leaderless = info.partitions.iter().filter(|p| p.leader < 0).count();
    if leaderless > 0 {
        return Err(CliError::Failed(format!(
            "unhealthy: {leaderless} of {} partitions of {topic} have no leader",
            info.partitions.len()
        )));
    }
    println!(
        "healthy: {} brokers, topic {topic} with {} partitions, all led",
        metadata.brokers.len(),
        info.partitions.len()
    );
    Ok(())
}
