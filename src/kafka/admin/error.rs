//! Why a request to the cluster failed, and which failures asking again cannot mend.

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::protocol::StrBytes;

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No bootstrap address was given.
    #[error("no bootstrap servers given")]
    NoBootstrapServers,
    /// The TCP connection could not be opened.
    #[error("cannot connect to broker {address}: {source}")]
    Connect {
        /// The broker's `host:port`.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The connection broke during a request.
    #[error("connection to broker {address} failed: {source}")]
    Io {
        /// The broker's `host:port`.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// A connect or a request took longer than allowed.
    #[error("{what} to broker {address} timed out after {after:?}")]
    Timeout {
        /// The broker's `host:port`.
        address: String,
        /// `connect` or `request`.
        what: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// The broker does not support a request MetroCloud needs.
    #[error("broker {address} does not support {api}")]
    Unsupported {
        /// The broker's `host:port`.
        address: String,
        /// The request's name.
        api: String,
    },
    /// Bytes on the wire that do not follow the protocol.
    #[error("protocol error with broker {address}: {message}")]
    Protocol {
        /// The broker's `host:port`.
        address: String,
        /// What did not fit.
        message: String,
    },
    /// The broker answered with an error code.
    #[error("broker {address} answered {error:?}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Broker {
        /// The broker's `host:port`.
        address: String,
        /// The error code, decoded.
        error: ResponseError,
        /// The message the broker sent with it, if any.
        detail: Option<String>,
    },
    /// The TLS handshake failed.
    #[error("TLS with broker {address} failed: {message}")]
    Tls {
        /// The broker's `host:port`.
        address: String,
        /// Why, in words a user can act on.
        message: String,
    },
    /// The broker did not accept who the client says it is.
    #[error("broker {address} refused authentication: {message}")]
    Authentication {
        /// The broker's `host:port`.
        address: String,
        /// The broker's reason.
        message: String,
    },
    /// The broker closed a new connection at once: it expects another
    /// security protocol than the one configured.
    #[error("broker {address} closed the connection {when}: {hint}")]
    Refused {
        /// The broker's `host:port`.
        address: String,
        /// When it closed.
        when: &'static str,
        /// What it most likely expects.
        hint: &'static str,
    },
    /// Every bootstrap server failed; the last error is kept.
    #[error("no broker of {servers} answered; last error: {last}")]
    Unreachable {
        /// The addresses tried.
        servers: String,
        /// The error from the last one.
        last: Box<AdminError>,
    },
}

impl AdminError {
    pub(super) fn broker(address: &str, code: i16, detail: Option<&StrBytes>) -> AdminError {
        AdminError::Broker {
            address: address.to_string(),
            error: ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError),
            detail: detail.map(|d| d.to_string()),
        }
    }

    pub(super) fn decode(address: &str, error: impl std::fmt::Display) -> AdminError {
        AdminError::Protocol {
            address: address.to_string(),
            message: format!("cannot decode response: {error}"),
        }
    }

    /// Whether asking again cannot help: the cluster refused who the client
    /// is or what it asked for, or the two sides do not speak the same
    /// security protocol. Retrying these would only repeat the refusal.
    pub fn is_permanent(&self) -> bool {
        match self {
            AdminError::Tls { .. }
            | AdminError::Authentication { .. }
            | AdminError::Refused { .. } => true,
            AdminError::Broker { error, .. } => is_refusal(*error),
            AdminError::Unreachable { last, .. } => last.is_permanent(),
            _ => false,
        }
    }

    /// Whether the failure is of the connection rather than an answer from the cluster.
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            AdminError::Connect { .. }
                | AdminError::Io { .. }
                | AdminError::Timeout { .. }
                | AdminError::Unreachable { .. }
        )
    }
}

/// Whether a broker's error code refuses the client's identity or rights.
pub fn is_refusal(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::TopicAuthorizationFailed
            | ResponseError::GroupAuthorizationFailed
            | ResponseError::ClusterAuthorizationFailed
            | ResponseError::TransactionalIdAuthorizationFailed
            | ResponseError::SaslAuthenticationFailed
            | ResponseError::UnsupportedSaslMechanism
            | ResponseError::IllegalSaslState
            | ResponseError::DelegationTokenAuthorizationFailed
    )
}
