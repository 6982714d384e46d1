//! One TCP connection to one broker, speaking Kafka's request/response framing.
//!
//! The messages themselves come from the `kafka-protocol` crate (generated from
//! Kafka's own schemas); this file only frames them: a 4-byte length prefix, a
//! request header with a correlation id, and the version both sides support,
//! learnt once per connection with an ApiVersions request. Every connect and
//! every request runs under a timeout, so a dead or frozen broker ends in an
//! error rather than a hang.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ConsumerGroupDescribeRequest,
    ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    CreateAclsRequest, CreateAclsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, DescribeQuorumRequest, DescribeQuorumResponse,
    FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListGroupsRequest, ListGroupsResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use super::AdminError;
use crate::kafka::security::Security;
use crate::kafka::transport::{self, KafkaStream, TransportError};

/// A request this client sends, paired with its response.
///
/// `kafka-protocol` ties requests to responses only when it is built for
/// brokers too; a client needs just this pairing, for the requests it sends.
pub trait Request: Message + Encodable + HeaderVersion {
    /// The request's API key.
    const KEY: i16;
    /// What the broker answers.
    type Response: Decodable + HeaderVersion;
}

macro_rules! requests {
    ($($key:ident: $request:ident => $response:ident,)*) => {
        $(impl Request for $request {
            const KEY: i16 = ApiKey::$key as i16;
            type Response = $response;
        })*
    };
}

requests! {
    ApiVersions: ApiVersionsRequest => ApiVersionsResponse,
    Metadata: MetadataRequest => MetadataResponse,
    CreateTopics: CreateTopicsRequest => CreateTopicsResponse,
    DeleteTopics: DeleteTopicsRequest => DeleteTopicsResponse,
    DescribeConfigs: DescribeConfigsRequest => DescribeConfigsResponse,
    DescribeQuorum: DescribeQuorumRequest => DescribeQuorumResponse,
    FindCoordinator: FindCoordinatorRequest => FindCoordinatorResponse,
    ConsumerGroupHeartbeat: ConsumerGroupHeartbeatRequest => ConsumerGroupHeartbeatResponse,
    OffsetCommit: OffsetCommitRequest => OffsetCommitResponse,
    OffsetFetch: OffsetFetchRequest => OffsetFetchResponse,
    ListOffsets: ListOffsetsRequest => ListOffsetsResponse,
    ListGroups: ListGroupsRequest => ListGroupsResponse,
    DescribeGroups: DescribeGroupsRequest => DescribeGroupsResponse,
    ConsumerGroupDescribe: ConsumerGroupDescribeRequest => ConsumerGroupDescribeResponse,
    InitProducerId: InitProducerIdRequest => InitProducerIdResponse,
    Fetch: FetchRequest => FetchResponse,
    SaslHandshake: SaslHandshakeRequest => SaslHandshakeResponse,
    CreateAcls: CreateAclsRequest => CreateAclsResponse,
    SaslAuthenticate: SaslAuthenticateRequest => SaslAuthenticateResponse,
}

/// Whether `error` is the broker closing the connection.
fn is_closed(error: &AdminError) -> bool {
    matches!(
        error,
        AdminError::Io { source, .. } if matches!(
            source.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
        )
    )
}

/// What an answer that is a TLS record instead of a Kafka frame is called.
const SPEAKS_TLS: &str = "the broker answered with a TLS record, not a Kafka response";

/// Whether the first four bytes of an answer are a TLS record's header (an
/// alert or a handshake, TLS 1.0 to 1.3 on the wire) rather than a length:
/// what a TLS listener sends back to a plaintext request.
fn answers_in_tls(length: i32) -> bool {
    let [kind, major, minor, _] = length.to_be_bytes();
    matches!(kind, 0x15 | 0x16) && major == 3 && minor <= 4
}

/// A connection refused before its first answer: a TLS listener reads a
/// plaintext request as a broken handshake, answers with an alert and hangs up.
fn closed_at_once(error: AdminError, security: &Security) -> AdminError {
    let speaks_tls =
        matches!(&error, AdminError::Io { source, .. } if source.to_string() == SPEAKS_TLS);
    match error {
        AdminError::Io { address, .. }
            if !security.protocol.uses_tls() && (speaks_tls || is_closed(&error)) =>
        {
            AdminError::Refused {
                address,
                when: "before answering its first request",
                hint: "the listener may expect TLS: set KAFKA_SECURITY_PROTOCOL to SSL or SASL_SSL",
            }
        }
        other => other,
    }
}

/// Largest response accepted; anything bigger is a framing error, not data.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// How long network operations may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time allowed to open a TCP connection.
    pub connect: Duration,
    /// Time allowed for one request to be answered.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
        }
    }
}

/// An open connection to one broker, with the API versions it supports.
#[derive(Debug)]
pub struct BrokerConnection {
    address: String,
    stream: BufReader<KafkaStream>,
    supported: HashMap<i16, (i16, i16)>,
    next_correlation_id: i32,
    timeouts: Timeouts,
    client_id: StrBytes,
    /// Where responses are read. A response is handed out as a slice of it
    /// (a fetch's records stay slices of it too), and the space is used
    /// again once every slice of it is dropped: no allocation, zeroing or
    /// page faults per response for a connection that keeps asking.
    incoming: BytesMut,
    /// Whether the connection authenticated with SASL.
    authenticated: bool,
    /// Whether a request besides the handshake has been answered.
    answered: bool,
}

impl BrokerConnection {
    /// Connects to `address` (`host:port`) as `security` says (TLS, then
    /// SASL), and asks which API versions it supports.
    pub async fn connect(
        address: &str,
        security: &Security,
        timeouts: Timeouts,
        client_id: &str,
    ) -> Result<Self, AdminError> {
        let stream = transport::open(address, security, timeouts.connect)
            .await
            .map_err(|e| match e {
                TransportError::Connect(source) => AdminError::Connect {
                    address: address.to_string(),
                    source,
                },
                TransportError::Timeout(after) => AdminError::Timeout {
                    address: address.to_string(),
                    what: "connect",
                    after,
                },
                TransportError::Tls(message) => AdminError::Tls {
                    address: address.to_string(),
                    message,
                },
            })?;
        let mut connection = BrokerConnection {
            address: address.to_string(),
            stream: BufReader::new(stream),
            supported: HashMap::new(),
            next_correlation_id: 0,
            timeouts,
            client_id: StrBytes::from_string(client_id.to_string()),
            incoming: BytesMut::new(),
            authenticated: false,
            answered: false,
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("metrocloud"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        // Version 3 is understood by every Kafka 2.4+ broker, and 4.x requires at least it.
        let response = connection
            .send_with_version(&request, 3)
            .await
            .map_err(|e| closed_at_once(e, security))?;
        if response.error_code != 0 {
            return Err(AdminError::broker(address, response.error_code, None));
        }
        connection.supported = response
            .api_keys
            .iter()
            .map(|key| (key.api_key, (key.min_version, key.max_version)))
            .collect();
        if security.protocol.uses_sasl() {
            super::sasl::authenticate(&mut connection, security).await?;
            connection.authenticated = true;
        }
        Ok(connection)
    }

    /// The stream and the API versions the broker offers, for a connection
    /// that frames its own requests from here on (the producer's pipeline).
    pub fn into_parts(self) -> (KafkaStream, HashMap<i16, (i16, i16)>) {
        debug_assert!(self.stream.buffer().is_empty(), "nothing arrives unasked");
        (self.stream.into_inner(), self.supported)
    }

    /// The `host:port` this connection goes to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` at the highest version both sides support, and reads its response.
    pub async fn send<R: Request>(&mut self, request: &R) -> Result<R::Response, AdminError> {
        self.send_at_most(request, i16::MAX).await
    }

    /// Like [`BrokerConnection::send`], at version `highest` or below (for a
    /// request whose later versions change what the caller must fill in, such
    /// as Fetch naming topics by id from version 13).
    pub async fn send_at_most<R: Request>(
        &mut self,
        request: &R,
        highest: i16,
    ) -> Result<R::Response, AdminError> {
        let version = self.negotiate::<R>(highest)?;
        let answer = self.send_with_version(request, version).await;
        match answer {
            Ok(answer) => {
                self.answered = true;
                Ok(answer)
            }
            // A SASL listener answers ApiVersions, then closes a connection
            // whose next request is not the handshake.
            Err(e) if !self.answered && !self.authenticated && is_closed(&e) => {
                Err(AdminError::Refused {
                    address: self.address.clone(),
                    when: "at the first request after ApiVersions",
                    hint: "the listener requires SASL: set KAFKA_SECURITY_PROTOCOL to SASL_PLAINTEXT or SASL_SSL, with KAFKA_SASL_USERNAME and a password",
                })
            }
            Err(e) => Err(e),
        }
    }

    fn negotiate<R: Request>(&self, highest: i16) -> Result<i16, AdminError> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| AdminError::Unsupported {
            address: self.address.clone(),
            api: format!("api key {}", R::KEY),
        })?;
        let unsupported = || AdminError::Unsupported {
            address: self.address.clone(),
            api: format!("{api:?}"),
        };
        let (broker_min, broker_max) = *self.supported.get(&R::KEY).ok_or_else(unsupported)?;
        let version = broker_max.min(R::VERSIONS.max).min(highest);
        if version < broker_min.max(R::VERSIONS.min) {
            return Err(unsupported());
        }
        Ok(version)
    }

    async fn send_with_version<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, AdminError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = self.encode(request, version, correlation_id)?;
        let timeout = self.timeouts.request;
        let address = self.address.clone();
        let exchange = async {
            let socket = self.stream.get_mut();
            socket.write_all(&frame).await?;
            socket.flush().await?;
            let length = self.stream.read_i32().await?;
            if answers_in_tls(length) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    SPEAKS_TLS,
                ));
            }
            let length = usize::try_from(length).unwrap_or(usize::MAX);
            if length > MAX_RESPONSE_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("response of {length} bytes is larger than allowed"),
                ));
            }
            let mut body = std::mem::take(&mut self.incoming);
            body.clear();
            body.reserve(length);
            while body.len() < length {
                let wanted = (length - body.len()) as u64;
                if (&mut self.stream).take(wanted).read_buf(&mut body).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            let frame = body.split().freeze();
            self.incoming = body;
            Ok(frame)
        };
        let mut body = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| AdminError::Timeout {
                address: address.clone(),
                what: "request",
                after: timeout,
            })?
            .map_err(|source| AdminError::Io {
                address: address.clone(),
                source,
            })?;
        let header_version = R::Response::header_version(version);
        let header = ResponseHeader::decode(&mut body, header_version)
            .map_err(|e| AdminError::decode(&address, e))?;
        if header.correlation_id != correlation_id {
            return Err(AdminError::Protocol {
                address,
                message: format!(
                    "response correlation id {} does not match request {}",
                    header.correlation_id, correlation_id
                ),
            });
        }
        R::Response::decode(&mut body, version).map_err(|e| AdminError::decode(&address, e))
    }

    fn encode<R: Request>(
        &self,
        request: &R,
        version: i16,
        correlation_id: i32,
    ) -> Result<BytesMut, AdminError> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0u8; 4]);
        let encoded = header
            .encode(&mut frame, R::header_version(version))
            .and_then(|_| request.encode(&mut frame, version));
        encoded.map_err(|e| AdminError::Protocol {
            address: self.address.clone(),
            message: format!("cannot encode request: {e}"),
        })?;
        let length = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_alert_or_handshake_is_told_from_a_frame_length() {
        // An alert record of TLS 1.2 (0x15 0x03 0x03) and a server hello.
        assert!(answers_in_tls(i32::from_be_bytes([0x15, 3, 3, 0])));
        assert!(answers_in_tls(i32::from_be_bytes([0x16, 3, 1, 2])));
        // Kafka frames: lengths up to the largest answer accepted.
        assert!(!answers_in_tls(1_024));
        assert!(!answers_in_tls(MAX_RESPONSE_BYTES as i32));
    }
}
