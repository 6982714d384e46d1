//! MQTT 3.1.1 and 5 packets as the gateway sees them, whichever version a
//! client speaks: rumqttc's codecs underneath, one shape above.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

use super::MqttError;
use crate::gateway::intake::Refusal;

/// The largest packet taken: a reading is well under this.
pub const MAX_PACKET: usize = 1024 * 1024;

const CONNECT: u8 = 1;
const PINGREQ: u8 = 12;
const DISCONNECT: u8 = 14;

/// The protocol version a client connected with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.
    V5,
}

/// A client's CONNECT.
pub struct Connect {
    /// The version it speaks.
    pub version: Version,
    /// Its client id.
    pub client_id: String,
    /// Its username and password, if it sent them.
    pub login: Option<(String, String)>,
    /// Seconds it may stay silent; 0 for ever.
    pub keep_alive: u16,
}

/// A packet from a connected client.
pub enum Incoming {
    /// A message on a topic.
    Publish {
        /// 0, 1 or 2.
        qos: u8,
        /// Its packet id (0 for QoS 0).
        pkid: u16,
        /// The topic.
        topic: String,
        /// The payload.
        payload: Bytes,
    },
    /// Subscriptions, refused: the gateway delivers nothing.
    Subscribe { pkid: u16, filters: usize },
    /// Unsubscriptions, acknowledged.
    Unsubscribe { pkid: u16, filters: usize },
    /// Keep-alive.
    PingReq,
    /// The client is leaving.
    Disconnect,
    /// Anything a client does not send a server after CONNECT (a second
    /// CONNECT, acknowledgements of publications it never got).
    Unexpected(&'static str),
}

/// What the gateway answers.
pub enum Outgoing {
    /// A PUBLISH taken (`None`) or refused.
    PubAck { pkid: u16, refusal: Option<Refusal> },
    /// Keep-alive answer.
    PingResp,
    /// Every subscription refused.
    SubAck { pkid: u16, filters: usize },
    /// Unsubscriptions done.
    UnsubAck { pkid: u16, filters: usize },
}

/// The length of the whole packet at the start of `bytes` (fixed header
/// included), `None` if more bytes are needed to know.
pub fn frame_length(bytes: &[u8]) -> Result<Option<usize>, MqttError> {
    let mut remaining = 0usize;
    for (i, byte) in bytes.iter().enumerate().skip(1).take(4) {
        remaining |= usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            let length = i + 1 + remaining;
            if length > MAX_PACKET {
                return Err(MqttError::TooLarge(length));
            }
            return Ok(Some(length));
        }
    }
    if bytes.len() >= 5 {
        return Err(MqttError::Malformed(
            "remaining length longer than 4 bytes".into(),
        ));
    }
    Ok(None)
}

/// The packet type of a whole packet.
fn packet_type(frame: &[u8]) -> u8 {
    frame[0] >> 4
}

/// Reads a CONNECT; which version it is comes from its protocol level.
pub fn read_connect(mut frame: BytesMut) -> Result<Connect, MqttError> {
    if packet_type(&frame) != CONNECT {
        return Err(MqttError::Protocol(
            "the first packet was not CONNECT".into(),
        ));
    }
    let header = frame_length(&frame)?.map_or(0, |total| total - remaining(&frame));
    // Protocol name (two length bytes and "MQTT"), then the level.
    let level = frame.get(header + 6).copied().unwrap_or(0);
    match level {
        4 => match v4::Packet::read(&mut frame, MAX_PACKET).map_err(malformed)? {
            v4::Packet::Connect(c) => Ok(Connect {
                version: Version::V311,
                client_id: c.client_id,
                login: c.login.map(|l| (l.username, l.password)),
                keep_alive: c.keep_alive,
            }),
            _ => Err(MqttError::Protocol(
                "the first packet was not CONNECT".into(),
            )),
        },
        5 => match v5::Packet::read(&mut frame, Some(MAX_PACKET as u32)).map_err(malformed)? {
            v5::Packet::Connect(c, _, login) => Ok(Connect {
                version: Version::V5,
                client_id: c.client_id,
                login: login.map(|l| (l.username, l.password)),
                keep_alive: c.keep_alive,
            }),
            _ => Err(MqttError::Protocol(
                "the first packet was not CONNECT".into(),
            )),
        },
        other => Err(MqttError::UnsupportedVersion(other)),
    }
}

/// The remaining length of a whole packet.
fn remaining(frame: &[u8]) -> usize {
    let mut value = 0usize;
    for (i, byte) in frame.iter().enumerate().skip(1).take(4) {
        value |= usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}

fn malformed(e: impl std::fmt::Display) -> MqttError {
    MqttError::Malformed(e.to_string())
}

/// Reads a packet after CONNECT.
pub fn read(version: Version, mut frame: BytesMut) -> Result<Incoming, MqttError> {
    // Read here, not by the codec: an MQTT 5 DISCONNECT may be two bytes long.
    match packet_type(&frame) {
        PINGREQ => return Ok(Incoming::PingReq),
        DISCONNECT => return Ok(Incoming::Disconnect),
        _ => {}
    }
    Ok(match version {
        Version::V311 => match v4::Packet::read(&mut frame, MAX_PACKET).map_err(malformed)? {
            v4::Packet::Publish(p) => Incoming::Publish {
                qos: p.qos as u8,
                pkid: p.pkid,
                topic: p.topic,
                payload: p.payload,
            },
            v4::Packet::Subscribe(s) => Incoming::Subscribe {
                pkid: s.pkid,
                filters: s.filters.len(),
            },
            v4::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
                pkid: u.pkid,
                filters: u.topics.len(),
            },
            v4::Packet::Connect(_) => Incoming::Unexpected("a second CONNECT"),
            _ => Incoming::Unexpected(
                "a packet only a server sends, or an acknowledgement of nothing sent",
            ),
        },
        Version::V5 => {
            match v5::Packet::read(&mut frame, Some(MAX_PACKET as u32)).map_err(malformed)? {
                v5::Packet::Publish(p) => Incoming::Publish {
                    qos: p.qos as u8,
                    pkid: p.pkid,
                    topic: String::from_utf8(p.topic.to_vec())
                        .map_err(|_| MqttError::Malformed("topic is not UTF-8".into()))?,
                    payload: p.payload,
                },
                v5::Packet::Subscribe(s) => Incoming::Subscribe {
                    pkid: s.pkid,
                    filters: s.filters.len(),
                },
                v5::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
                    pkid: u.pkid,
                    filters: u.filters.len(),
                },
                v5::Packet::Connect(..) => Incoming::Unexpected("a second CONNECT"),
                _ => Incoming::Unexpected(
                    "a packet only a server sends, or an acknowledgement of nothing sent",
                ),
            }
        }
    })
}

/// Writes the CONNACK: accepted, or refused as not authorized with `reason`.
pub fn write_connack(version: Version, refused: Option<&str>, out: &mut BytesMut) {
    let written = match version {
        Version::V311 => {
            let code = if refused.is_some() {
                v4::ConnectReturnCode::NotAuthorized
            } else {
                v4::ConnectReturnCode::Success
            };
            v4::ConnAck::new(code, false)
                .write(out)
                .map_err(|e| e.to_string())
        }
        Version::V5 => {
            let code = if refused.is_some() {
                v5::ConnectReturnCode::NotAuthorized
            } else {
                v5::ConnectReturnCode::Success
            };
            v5::ConnAck {
                session_present: false,
                code,
                properties: Some(connack_properties(refused)),
            }
            .write(out)
            .map_err(|e| e.to_string())
        }
    };
    written.expect("a CONNACK always encodes");
}

/// What an MQTT 5 client learns at CONNACK: QoS 1 at most, no retained
/// messages, subscriptions or topic aliases (this is an intake, not a broker).
fn connack_properties(refused: Option<&str>) -> v5::ConnAckProperties {
    v5::ConnAckProperties {
        session_expiry_interval: None,
        receive_max: None,
        max_qos: Some(1),
        retain_available: Some(0),
        max_packet_size: Some(MAX_PACKET as u32),
        assigned_client_identifier: None,
        topic_alias_max: None,
        reason_string: refused.map(str::to_string),
        user_properties: Vec::new(),
        wildcard_subscription_available: Some(0),
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(0),
        server_keep_alive: None,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

/// Writes an answer.
pub fn write(version: Version, packet: Outgoing, out: &mut BytesMut) {
    let written: Result<usize, String> = match (version, packet) {
        (Version::V311, Outgoing::PubAck { pkid, .. }) => {
            v4::PubAck::new(pkid).write(out).map_err(|e| e.to_string())
        }
        (Version::V5, Outgoing::PubAck { pkid, refusal }) => {
            let (reason, properties) = match refusal {
                None => (v5::PubAckReason::Success, None),
                Some(refusal) => (
                    puback_reason(&refusal),
                    Some(v5::PubAckProperties {
                        reason_string: Some(format!("{}: {}", refusal.code(), refusal.detail())),
                        user_properties: Vec::new(),
                    }),
                ),
            };
            v5::PubAck {
                pkid,
                reason,
                properties,
            }
            .write(out)
            .map_err(|e| e.to_string())
        }
        (Version::V311, Outgoing::PingResp) => v4::PingResp.write(out).map_err(|e| e.to_string()),
        (Version::V5, Outgoing::PingResp) => v5::PingResp::write(out).map_err(|e| e.to_string()),
        (Version::V311, Outgoing::SubAck { pkid, filters }) => {
            v4::SubAck::new(pkid, vec![v4::SubscribeReasonCode::Failure; filters])
                .write(out)
                .map_err(|e| e.to_string())
        }
        (Version::V5, Outgoing::SubAck { pkid, filters }) => v5::SubAck {
            pkid,
            return_codes: vec![v5::SubscribeReasonCode::NotAuthorized; filters],
            properties: None,
        }
        .write(out)
        .map_err(|e| e.to_string()),
        (Version::V311, Outgoing::UnsubAck { pkid, .. }) => v4::UnsubAck::new(pkid)
            .write(out)
            .map_err(|e| e.to_string()),
        (Version::V5, Outgoing::UnsubAck { pkid, filters }) => v5::UnsubAck {
            pkid,
            reasons: vec![v5::UnsubAckReason::NoSubscriptionExisted; filters],
            properties: None,
        }
        .write(out)
        .map_err(|e| e.to_string()),
    };
    written.expect("an answer always encodes");
}

/// The MQTT 5 reason code of a refused reading.
fn puback_reason(refusal: &Refusal) -> v5::PubAckReason {
    match refusal {
        Refusal::Invalid { .. } => v5::PubAckReason::PayloadFormatInvalid,
        Refusal::NotAuthorized(_) => v5::PubAckReason::NotAuthorized,
        Refusal::TopicInvalid(_) => v5::PubAckReason::TopicNameInvalid,
        Refusal::Full(_) => v5::PubAckReason::QuotaExceeded,
        Refusal::Failed(_) => v5::PubAckReason::UnspecifiedError,
    }
}
