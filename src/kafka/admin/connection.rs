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
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    DescribeQuorumRequest, DescribeQuorumResponse, FetchRequest, FetchResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::AdminError;

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
    stream: BufReader<TcpStream>,
    supported: HashMap<i16, (i16, i16)>,
    next_correlation_id: i32,
    timeouts: Timeouts,
    client_id: StrBytes,
    /// Where responses are read. A response is handed out as a slice of it
    /// (a fetch's records stay slices of it too), and the space is used
    /// again once every slice of it is dropped: no allocation, zeroing or
    /// page faults per response for a connection that keeps asking.
    incoming: BytesMut,
}

impl BrokerConnection {
    /// Connects to `address` (`host:port`) and asks which API versions it supports.
    pub async fn connect(
        address: &str,
        timeouts: Timeouts,
        client_id: &str,
    ) -> Result<Self, AdminError> {
        let stream = tokio::time::timeout(timeouts.connect, TcpStream::connect(address))
            .await
            .map_err(|_| AdminError::Timeout {
                address: address.to_string(),
                what: "connect",
                after: timeouts.connect,
            })?
            .map_err(|source| AdminError::Connect {
                address: address.to_string(),
                source,
            })?;
        stream.set_nodelay(true).ok();
        let mut connection = BrokerConnection {
            address: address.to_string(),
            stream: BufReader::new(stream),
            supported: HashMap::new(),
            next_correlation_id: 0,
            timeouts,
            client_id: StrBytes::from_string(client_id.to_string()),
            incoming: BytesMut::new(),
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("metrocloud"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        // Version 3 is understood by every Kafka 2.4+ broker, and 4.x requires at least it.
        let response = connection.send_with_version(&request, 3).await?;
        if response.error_code != 0 {
            return Err(AdminError::broker(address, response.error_code, None));
        }
        connection.supported = response
            .api_keys
            .iter()
            .map(|key| (key.api_key, (key.min_version, key.max_version)))
            .collect();
        Ok(connection)
    }

    /// The `host:port` this connection goes to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` at the highest version both sides support, and reads its response.
    pub async fn send<R: Request>(&mut self, request: &R) -> Result<R::Response, AdminError> {
        let version = self.negotiate::<R>(i16::MAX)?;
        self.send_with_version(request, version).await
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
        self.send_with_version(request, version).await
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
            self.stream.get_mut().write_all(&frame).await?;
            let length = self.stream.read_i32().await?;
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
