//! `cluster.json`: what a cluster directory holds about its cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ClusterState {
    pub(super) kafka_version: String,
    pub(super) cluster_id: String,
    pub(super) nodes: Vec<NodeSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) broker_overrides: BTreeMap<String, String>,
    #[serde(default = "default_heap")]
    pub(super) heap: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) fast_start: bool,
    /// SASL_SSL and SASL_PLAINTEXT listeners, users and ACLs ([`super::secure`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) secure: bool,
}

pub(super) fn default_heap() -> String {
    node::DEFAULT_HEAP.to_string()
}

pub(super) fn state_path(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

pub(super) fn read_state(dir: &Path) -> Result<Option<ClusterState>, ClusterError> {
    let path = state_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ClusterError::State { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClusterError::io(&path, e)),
    }
}

pub(super) fn write_state(dir: &Path, state: &ClusterState) -> Result<(), ClusterError> {
    let path = state_path(dir);
    let text = serde_json::to_string_pretty(state).map_err(|source| ClusterError::State {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, text).map_err(|e| ClusterError::io(&path, e))
}

/// A KRaft cluster id: a random Kafka UUID.
pub(super) fn new_cluster_id() -> String {
    crate::kafka::admin::random_kafka_uuid()
}
