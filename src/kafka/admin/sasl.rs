//! SASL authentication on a new connection, as Kafka frames it: a
//! SaslHandshake request naming the mechanism, then SaslAuthenticate
//! requests carrying the mechanism's messages until it is done (KIP-152).
//!
//! The mechanisms themselves (PLAIN and SCRAM's salted challenge and
//! response, with the server's signature checked at the end) are `rsasl`'s,
//! the crate rskafka uses for the same job: no cryptography is written here.

use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rsasl::prelude::{Mechname, SASLClient, SASLConfig};

use super::{AdminError, BrokerConnection};
use crate::kafka::security::Security;

/// Authenticates `connection` with the credentials in `security`.
pub(super) async fn authenticate(
    connection: &mut BrokerConnection,
    security: &Security,
) -> Result<(), AdminError> {
    let address = connection.address().to_string();
    let refused = |message: String| AdminError::Authentication {
        address: address.clone(),
        message,
    };
    let mechanism = security.mechanism.name();
    let handshake = connection
        .send(&SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)))
        .await?;
    if handshake.error_code != 0 {
        let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(refused(format!(
            "the listener does not offer {mechanism} (it offers {}); set KAFKA_SASL_MECHANISM to one of them",
            if offered.is_empty() {
                "none".to_string()
            } else {
                offered.join(", ")
            }
        )));
    }
    let username = security.username.clone().unwrap_or_default();
    let password = security
        .password
        .as_ref()
        .map(|p| p.expose().to_string())
        .unwrap_or_default();
    let config = SASLConfig::with_credentials(None, username, password)
        .map_err(|e| refused(format!("cannot set up {mechanism}: {e}")))?;
    let wanted =
        Mechname::parse(mechanism.as_bytes()).map_err(|e| refused(format!("{mechanism}: {e}")))?;
    let mut session = SASLClient::new(config)
        .start_suggested(&[wanted])
        .map_err(|e| refused(format!("cannot start {mechanism}: {e}")))?;
    let mut received: Option<Vec<u8>> = None;
    loop {
        let mut message = Vec::new();
        let state = session
            .step(received.as_deref(), &mut message)
            .map_err(|e| refused(format!("{mechanism} failed: {e}")))?;
        if state.has_sent_message() {
            let answer = connection
                .send(&SaslAuthenticateRequest::default().with_auth_bytes(message.into()))
                .await?;
            if answer.error_code != 0 {
                let reason = answer
                    .error_message
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| format!("error code {}", answer.error_code));
                return Err(refused(reason));
            }
            received = Some(answer.auth_bytes.to_vec());
        }
        if state.is_finished() {
            return Ok(());
        }
    }
}
