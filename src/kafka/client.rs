//! An rskafka client shared by many tasks, replaced when it stops answering
//! (the console's topic readers and the alert history read through it).
//!
//! rskafka keeps one cached connection to an arbitrary broker for metadata
//! lookups, and each partition client keeps its leader's connection; it puts
//! no time limit on a request. A frozen broker (SIGSTOP, a long GC pause, a
//! hung disk) keeps its TCP connections open and never answers, so a cached
//! connection to it blocks every lookup made through that client — even after
//! the controller has moved leadership away, and even after the broker
//! resumes, since the requests already queued on it were abandoned.
//!
//! The same client can also keep a stale view: after leadership moved, rskafka
//! may go on asking a former leader, which answers `NOT_LEADER_OR_FOLLOWER`
//! for minutes.
//!
//! rskafka's own retries are therefore kept short
//! ([`internal_retry_deadline`]), and every call our layer makes is bounded by
//! a timeout. When a call times out or fails, the caller asks for the client
//! to be replaced: the new one bootstraps from the first broker that answers, asked
//! one at a time in random order with a share of the timeout each (a frozen
//! broker accepts connections but never answers), and has no cached connection
//! or metadata. Callers that time out
//! together replace it once: each names the generation it used, and only the
//! first request for a generation builds a new client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::SliceRandom;
use rskafka::BackoffConfig;
use rskafka::client::error::Error as KafkaError;
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};

use super::security::{Brokers, SaslMechanism};

/// How long rskafka may retry on its own within one call: a few seconds, so
/// that a stale view is dropped soon (retries go on in our layer, with a fresh client).
pub fn internal_retry_deadline(request_timeout: Duration) -> Duration {
    request_timeout.min(Duration::from_secs(2))
}

/// rskafka's own backoff with its retries kept within [`internal_retry_deadline`]:
/// the decision to retry, and with a fresh client, stays with the caller.
pub fn short_retries(request_timeout: Duration) -> BackoffConfig {
    BackoffConfig {
        deadline: Some(internal_retry_deadline(request_timeout)),
        ..BackoffConfig::default()
    }
}

/// `call`, or rskafka's own timeout error once `timeout` has passed.
pub async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, KafkaError>>,
) -> Result<T, KafkaError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| KafkaError::Timeout)?
}

/// The records of `partition` from offset `from` up to `end` (excluded),
/// each request within `timeout`. Stops early at a gap no fetch crosses.
pub async fn records_between(
    partition: &rskafka::client::partition::PartitionClient,
    from: i64,
    end: i64,
    timeout: Duration,
) -> Result<Vec<rskafka::record::RecordAndOffset>, KafkaError> {
    let mut found = Vec::new();
    let mut offset = from;
    while offset < end {
        let (records, _) = bounded(
            timeout,
            partition.fetch_records(offset, 1..4 * 1024 * 1024, 100),
        )
        .await?;
        let Some(last) = records.last() else { break };
        offset = last.offset + 1;
        found.extend(
            records
                .into_iter()
                .filter(|r| r.offset >= from && r.offset < end),
        );
    }
    Ok(found)
}

/// A client and the means to replace it; see the module documentation.
pub struct SharedClient {
    bootstrap: Brokers,
    client_id: String,
    backoff: BackoffConfig,
    timeout: Duration,
    current: Mutex<(u64, Arc<Client>)>,
    replacing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SharedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedClient")
            .field("bootstrap", &self.bootstrap.addresses)
            .field("client_id", &self.client_id)
            .field("generation", &self.current().0)
            .finish()
    }
}

impl SharedClient {
    /// Connects once, within `timeout`.
    pub async fn connect(
        bootstrap: impl Into<Brokers>,
        client_id: &str,
        backoff: BackoffConfig,
        timeout: Duration,
    ) -> Result<SharedClient, KafkaError> {
        let bootstrap = bootstrap.into();
        let client = build(&bootstrap, client_id, &backoff, timeout).await?;
        Ok(SharedClient {
            bootstrap,
            client_id: client_id.to_string(),
            backoff,
            timeout,
            current: Mutex::new((0, Arc::new(client))),
            replacing: tokio::sync::Mutex::new(()),
        })
    }

    /// The client in use, with its generation (to name when asking for a replacement).
    pub fn current(&self) -> (u64, Arc<Client>) {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (current.0, Arc::clone(&current.1))
    }

    /// Replaces the client of `generation` with a new one, unless that was done
    /// already. When no broker answers within the timeout, the old client stays
    /// and the next caller to time out tries again.
    pub async fn replace(&self, generation: u64) {
        let _one_at_a_time = self.replacing.lock().await;
        if self.current().0 != generation {
            return;
        }
        match self.build_from_any().await {
            Ok(client) => {
                let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
                *current = (generation + 1, Arc::new(client));
                tracing::info!(
                    "{}: reconnected to the cluster afresh after a failed request",
                    self.client_id
                );
            }
            Err(e) => tracing::warn!(
                "{}: no broker answered a new connection yet: {e}",
                self.client_id
            ),
        }
    }
}

impl SharedClient {
    /// A client bootstrapped from one broker: each is tried in random order
    /// with an equal share of the timeout, so a frozen one costs only its share.
    async fn build_from_any(&self) -> Result<Client, KafkaError> {
        let mut addresses = self.bootstrap.addresses.clone();
        addresses.shuffle(&mut rand::rng());
        let share = self.timeout / addresses.len().max(1) as u32;
        let mut last = KafkaError::Timeout;
        for address in addresses {
            let one = Brokers::new(vec![address], Arc::clone(&self.bootstrap.security));
            match build(&one, &self.client_id, &self.backoff, share).await {
                Ok(client) => return Ok(client),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// An rskafka client builder for `brokers`, with their SASL and TLS settings.
pub fn builder(brokers: &Brokers) -> ClientBuilder {
    let security = &brokers.security;
    let mut builder = ClientBuilder::new(brokers.addresses.clone());
    if security.protocol.uses_sasl() {
        let credentials = Credentials::new(
            security.username.clone().unwrap_or_default(),
            security
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        );
        builder = builder.sasl_config(match security.mechanism {
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
            SaslMechanism::Plain => SaslConfig::Plain(credentials),
        });
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = security
        .tls
        .as_ref()
        .filter(|_| security.protocol.uses_tls())
    {
        builder = builder.tls_config(Arc::clone(tls));
    }
    builder
}

async fn build(
    brokers: &Brokers,
    client_id: &str,
    backoff: &BackoffConfig,
    timeout: Duration,
) -> Result<Client, KafkaError> {
    let build = builder(brokers)
        .client_id(client_id)
        .backoff_config(backoff.clone())
        .build();
    let client = tokio::time::timeout(timeout, build)
        .await
        .unwrap_or(Err(KafkaError::Timeout));
    crate::kafka::nodelay::keep_sweeping();
    crate::kafka::nodelay::sweep();
    client
}
