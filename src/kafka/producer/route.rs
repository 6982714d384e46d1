//! Where a partition's batches go, and the producer ids they carry.
//!
//! Partition leaders come from a Metadata request, asked again for a
//! partition whose leader moved or could not be reached. Producer ids come
//! from InitProducerId: with one, the broker numbers each partition's batches
//! and writes a batch sent twice (a retry after a lost answer) only once, in
//! order. Both go through the [`AdminClient`], which moves on to the next
//! bootstrap broker when one does not answer.

use std::collections::HashMap;
use std::sync::Mutex;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::InitProducerIdRequest;

use super::encode::ProducerIdentity;
use crate::kafka::admin::{AdminClient, AdminError};
use crate::lock::lock;

/// Partition leaders of one topic and producer ids, for the partition writers.
pub(super) struct Route {
    admin: AdminClient,
    topic: String,
    /// Partition → leader's `host:port`, as last learnt.
    leaders: Mutex<HashMap<i32, String>>,
    /// One metadata request at a time: writers that miss together wait for one answer.
    refreshing: tokio::sync::Mutex<()>,
}

impl Route {
    pub(super) fn new(admin: AdminClient, topic: &str) -> Route {
        Route {
            admin,
            topic: topic.to_string(),
            leaders: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The topic's partition count; `None` when the cluster does not know the topic.
    pub(super) async fn partition_count(&self) -> Result<Option<i32>, AdminError> {
        self.refresh().await
    }

    /// The `host:port` of `partition`'s leader.
    pub(super) async fn leader(&self, partition: i32) -> Result<String, String> {
        if let Some(address) = lock(&self.leaders).get(&partition) {
            return Ok(address.clone());
        }
        let _one = self.refreshing.lock().await;
        if let Some(address) = lock(&self.leaders).get(&partition) {
            return Ok(address.clone());
        }
        self.refresh()
            .await
            .map_err(|e| format!("cannot learn {}'s leaders: {e}", self.topic))?;
        lock(&self.leaders)
            .get(&partition)
            .cloned()
            .ok_or_else(|| format!("{}-{partition} has no leader now", self.topic))
    }

    /// Forgets `partition`'s leader: the next [`Route::leader`] asks the cluster.
    pub(super) fn forget(&self, partition: i32) {
        lock(&self.leaders).remove(&partition);
    }

    /// Asks for the topic's metadata and keeps every partition's leader.
    async fn refresh(&self) -> Result<Option<i32>, AdminError> {
        let metadata = self.admin.metadata(Some(&[self.topic.as_str()])).await?;
        let Some(topic) = metadata.topic(&self.topic) else {
            return Ok(None);
        };
        let addresses: HashMap<i32, String> = metadata
            .brokers
            .iter()
            .map(|b| (b.id, format!("{}:{}", b.host, b.port)))
            .collect();
        let mut leaders = lock(&self.leaders);
        leaders.clear();
        for partition in &topic.partitions {
            if let Some(address) = addresses.get(&partition.leader) {
                leaders.insert(partition.partition, address.clone());
            }
        }
        Ok(Some(topic.partitions.len() as i32))
    }

    /// A new producer id and epoch, for a writer starting or starting its
    /// numbering again.
    pub(super) async fn new_identity(&self) -> Result<ProducerIdentity, String> {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000);
        let response = self
            .admin
            .send(&request)
            .await
            .map_err(|e| format!("cannot get a producer id: {e}"))?;
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            return Err(format!("cannot get a producer id: {error}"));
        }
        Ok(ProducerIdentity {
            id: response.producer_id.0,
            epoch: response.producer_epoch,
        })
    }
}
