//! The door every message goes through, whatever its protocol: who sent it,
//! whether it is a reading, and into the buffer.
//!
//! A valid reading is appended to the buffer and acknowledged to its device
//! once durable. A refused one (not a reading, a device id its credential
//! does not cover, a topic naming another device) is told to the device with
//! the reason, and its dead letter is appended to the same buffer, so it
//! reaches the dead-letter topic in the order it came, even after an outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::Utc;

use super::buffer::{Buffer, NotDurable, Spooled};
use super::credentials::{Credentials, Identity};
use super::timings::Timings;
use crate::sensor::validate::{RejectReason, validate_value};
use crate::spool::SpoolError;

/// Counts since the gateway started, for the status line, `/metrics` and the console.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Readings appended to the buffer.
    pub accepted: AtomicU64,
    /// Messages refused: not a reading, or not this sender's to send.
    pub refused: AtomicU64,
    /// Connections or requests refused for their credentials.
    pub unauthorized: AtomicU64,
    /// Messages pushed back because the buffer was full.
    pub pushed_back: AtomicU64,
    /// Readings Kafka acknowledged.
    pub forwarded: AtomicU64,
    /// Dead letters Kafka acknowledged.
    pub dead_letters: AtomicU64,
    /// Dead letters not kept, because the buffer was full.
    pub dead_letters_dropped: AtomicU64,
    /// Records sent again after Kafka did not acknowledge them (or one before them).
    pub resent: AtomicU64,
    /// When the oldest record Kafka has not acknowledged was accepted, in
    /// milliseconds since the epoch; 0 when none waits.
    pub oldest_waiting_ms: AtomicU64,
    /// How long MQTT readings waited inside the gateway for their PUBACK:
    /// from the PUBLISH read to the PUBACK written.
    pub ack_times: Timings,
}

/// Why a message was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It is not a valid reading.
    Invalid {
        /// The code.
        reason: RejectReason,
        /// The field at fault, where one is.
        field: Option<String>,
        /// What exactly is wrong.
        detail: String,
    },
    /// Its sender's credential does not cover the device.
    NotAuthorized(String),
    /// The MQTT topic is not `sensors/<device_type>/<device_id>` of this reading.
    TopicInvalid(String),
    /// The buffer is full: try again later; nothing was kept.
    Full(String),
    /// The disk failed: nothing was kept.
    Failed(String),
}

impl Refusal {
    /// The code, as dead letters and responses carry it.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Invalid { reason, .. } => reason.as_str(),
            Refusal::NotAuthorized(_) => "not_authorized",
            Refusal::TopicInvalid(_) => "topic_invalid",
            Refusal::Full(_) => "buffer_full",
            Refusal::Failed(_) => "buffer_failed",
        }
    }

    /// What is wrong, for people.
    pub fn detail(&self) -> &str {
        match self {
            Refusal::Invalid { detail, .. } => detail,
            Refusal::NotAuthorized(d)
            | Refusal::TopicInvalid(d)
            | Refusal::Full(d)
            | Refusal::Failed(d) => d,
        }
    }
}

impl From<NotDurable> for Refusal {
    fn from(e: NotDurable) -> Self {
        Refusal::Failed(e.to_string())
    }
}

/// One message at the door.
pub struct Message<'a> {
    /// Who sent it.
    pub identity: &'a Identity,
    /// The device type and id its MQTT topic names; HTTP has none.
    pub topic: Option<(&'a str, &'a str)>,
    /// The bytes, expected to be one reading's JSON.
    pub payload: Bytes,
    /// Where it came from, for its dead letter if refused.
    pub origin: &'a (dyn Fn() -> String + Sync),
}

/// The checks and the buffer behind every listener.
pub struct Intake {
    buffer: Arc<Buffer>,
    credentials: Option<Credentials>,
    stats: Arc<GatewayStats>,
}

impl Intake {
    /// A door into `buffer`; `credentials` unset lets anyone in.
    pub fn new(
        buffer: Arc<Buffer>,
        credentials: Option<Credentials>,
        stats: Arc<GatewayStats>,
    ) -> Self {
        Intake {
            buffer,
            credentials,
            stats,
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<GatewayStats> {
        &self.stats
    }

    /// The buffer.
    pub fn buffer(&self) -> &Arc<Buffer> {
        &self.buffer
    }

    /// The identity of an MQTT login (`None`: refused).
    pub fn login(&self, login: Option<(&str, &str)>) -> Option<Identity> {
        let identity = match (&self.credentials, login) {
            (None, _) => Some(Identity::Anonymous),
            (Some(credentials), Some((user, password))) => credentials.login(user, password),
            (Some(_), None) => None,
        };
        if identity.is_none() {
            self.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        }
        identity
    }

    /// The identity of an HTTP bearer token (`None`: refused).
    pub fn token(&self, token: Option<&str>) -> Option<Identity> {
        let identity = match (&self.credentials, token) {
            (None, _) => Some(Identity::Anonymous),
            (Some(credentials), Some(token)) => credentials.token(token),
            (Some(_), None) => None,
        };
        if identity.is_none() {
            self.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        }
        identity
    }

    /// Checks `message` and appends it; the number to wait on with
    /// [`Intake::durable`] before acknowledging. A full buffer refuses at
    /// once ([`Refusal::Full`]): the caller pushes back.
    pub fn offer(&self, message: &Message<'_>) -> Result<u64, Refusal> {
        let device_id = match self.check(message) {
            Ok(device_id) => device_id,
            Err(refusal) => {
                self.refuse(message, &refusal);
                return Err(refusal);
            }
        };
        let record = Spooled::Reading {
            accepted_at_ms: Utc::now().timestamp_millis(),
            key: Bytes::from(device_id),
            value: message.payload.clone(),
        };
        match self.buffer.append(&record) {
            Ok(number) => {
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(number)
            }
            Err(e @ (SpoolError::Full { .. } | SpoolError::Behind(_))) => {
                self.stats.pushed_back.fetch_add(1, Ordering::Relaxed);
                Err(Refusal::Full(e.to_string()))
            }
            Err(e) => Err(Refusal::Failed(e.to_string())),
        }
    }

    /// Waits until record `number` is on disk: then its device may be told.
    pub async fn durable(&self, number: u64) -> Result<(), Refusal> {
        Ok(self.buffer.until_durable(number).await?)
    }

    /// Whether the message is a reading its sender may send; its device id.
    fn check(&self, message: &Message<'_>) -> Result<String, Refusal> {
        let reading =
            validate_value(Some(&message.payload)).map_err(|rejection| Refusal::Invalid {
                reason: rejection.reason,
                field: rejection.field(),
                detail: rejection.detail,
            })?;
        if let Some((device_type, device_id)) = message.topic
            && (device_type != reading.device_type.as_str() || device_id != reading.device_id)
        {
            return Err(Refusal::TopicInvalid(format!(
                "topic names {device_type} device {device_id}, the reading is from {} device {}",
                reading.device_type, reading.device_id
            )));
        }
        if !message.identity.may_send_for(&reading.device_id) {
            return Err(Refusal::NotAuthorized(format!(
                "{} may not send readings of {}",
                message.identity.describe(),
                reading.device_id
            )));
        }
        Ok(reading.device_id)
    }

    /// Counts a refused message and keeps it for the dead-letter topic; with
    /// the buffer full it is counted instead (the device is told either way).
    pub fn refuse(&self, message: &Message<'_>, refusal: &Refusal) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        let key = message.topic.map(|(_, id)| id).unwrap_or_default();
        let record = Spooled::DeadLetter {
            refused_at_ms: Utc::now().timestamp_millis(),
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: message.payload.clone(),
            reason: refusal.code().to_string(),
            detail: refusal.detail().to_string(),
            origin: (message.origin)(),
        };
        if let Err(e) = self.buffer.append(&record) {
            self.stats
                .dead_letters_dropped
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("dead letter of a refused message not kept: {e}");
        }
    }
}
