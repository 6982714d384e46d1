//! The MQTT listener: devices publish readings to
//! `sensors/<device_type>/<device_id>`, with MQTT 3.1.1 or 5.
//!
//! Each connection has a reader and a writer. The reader checks each PUBLISH
//! at the door ([`Intake`]) and queues its answer; the writer sends a PUBACK
//! only once the reading is durable in the buffer, in the order the readings
//! came. QoS 0 readings are kept the same way, without an answer; QoS 2 is
//! not offered (an MQTT 5 CONNACK says QoS 1 at most; a QoS 2 PUBLISH ends
//! the connection). A refused reading gets its PUBACK at once: with MQTT 5 it
//! carries the reason code and a reason string, with 3.1.1 (which has no
//! way to say no) it is a plain PUBACK, and the refusal is in the dead-letter
//! topic.
//!
//! When the buffer is full, the reader waits for space before it reads
//! anything more: the device gets no PUBACK, and TCP pushes back on it.

mod packets;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::credentials::Identity;
use super::intake::{Intake, Message, Refusal};
use packets::{Incoming, Outgoing, Version};

/// How long a client has to send its CONNECT.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// How long writing an answer to a client may take.
const WRITE_WITHIN: Duration = Duration::from_secs(30);

/// Answers a connection may have queued (PUBLISHes read ahead of their
/// PUBACKs); past this the reader waits.
const QUEUED_ANSWERS: usize = 4096;

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A packet that is not MQTT.
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// A packet larger than the gateway takes.
    #[error("a packet of {0} bytes, more than {max} taken", max = packets::MAX_PACKET)]
    TooLarge(usize),
    /// A protocol level other than 4 (3.1.1) or 5.
    #[error("protocol level {0}: this gateway speaks MQTT 3.1.1 and 5")]
    UnsupportedVersion(u8),
    /// Valid MQTT, but not what a client may send now.
    #[error("{0}")]
    Protocol(String),
    /// The client was silent past its keep-alive, or did not connect in time.
    #[error("silent for {0:?}")]
    Silent(Duration),
    /// The buffer could not keep a reading.
    #[error("{0}")]
    Buffer(String),
}

/// Accepts connections until `shutdown`, then waits for those open to end
/// (each stops reading and sends the answers it owes).
pub async fn serve(listener: TcpListener, intake: Arc<Intake>, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("MQTT accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let intake = Arc::clone(&intake);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            if let Err(e) = connection(stream, peer, &intake, &shutdown).await {
                tracing::info!("MQTT client {peer} disconnected: {e}");
            }
        });
    }
    connections.close();
    connections.wait().await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    intake: &Arc<Intake>,
    shutdown: &CancellationToken,
) -> Result<(), MqttError> {
    let (mut reader, mut writer) = stream.into_split();
    let mut inbox = BytesMut::with_capacity(16 * 1024);
    let first = tokio::time::timeout(CONNECT_WITHIN, next_frame(&mut reader, &mut inbox))
        .await
        .map_err(|_| MqttError::Silent(CONNECT_WITHIN))??;
    let Some(first) = first else {
        return Ok(());
    };
    let connect = packets::read_connect(first)?;
    let login = connect
        .login
        .as_ref()
        .map(|(u, p)| (u.as_str(), p.as_str()));
    let mut out = BytesMut::new();
    let Some(identity) = intake.login(login) else {
        let user = login.map_or("(no username)", |(u, _)| u);
        packets::write_connack(connect.version, Some("bad username or password"), &mut out);
        writer.write_all(&out).await?;
        return Err(MqttError::Protocol(format!(
            "refused: not authorized as {user}"
        )));
    };
    packets::write_connack(connect.version, None, &mut out);
    writer.write_all(&out).await?;
    tracing::debug!(
        "MQTT client {} connected from {peer} as {}",
        connect.client_id,
        identity.describe()
    );

    let (answers, queued) = mpsc::channel(QUEUED_ANSWERS);
    let write = write_answers(writer, queued, connect.version, Arc::clone(intake));
    let session = Session {
        version: connect.version,
        identity,
        peer,
        client_id: connect.client_id,
        intake: Arc::clone(intake),
    };
    // Silent past one and a half keep-alives: gone (MQTT's own rule).
    let silence = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let read = session.read(reader, inbox, answers, silence, shutdown);
    let (read, write) = tokio::join!(read, write);
    read.and(write)
}

/// An answer waiting to be written: a PUBACK waits for its reading to be
/// durable (`durable`, with when its PUBLISH was read).
struct Answer {
    packet: Outgoing,
    durable: Option<(u64, Instant)>,
}

struct Session {
    version: Version,
    identity: Identity,
    peer: SocketAddr,
    client_id: String,
    intake: Arc<Intake>,
}

impl Session {
    async fn read(
        &self,
        mut reader: OwnedReadHalf,
        mut inbox: BytesMut,
        answers: mpsc::Sender<Answer>,
        silence: Option<Duration>,
        shutdown: &CancellationToken,
    ) -> Result<(), MqttError> {
        loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                frame = next_frame_within(&mut reader, &mut inbox, silence) => frame?,
            };
            let Some(frame) = frame else {
                return Ok(());
            };
            let read_at = Instant::now();
            let answer = match packets::read(self.version, frame)? {
                Incoming::Publish {
                    qos,
                    pkid,
                    topic,
                    payload,
                } => {
                    if qos > 1 {
                        return Err(MqttError::Protocol(
                            "QoS 2 PUBLISH: this gateway takes QoS 0 and 1".into(),
                        ));
                    }
                    let outcome = self.publish(&topic, payload, shutdown).await?;
                    match (qos, outcome) {
                        (0, _) => continue,
                        (_, Ok(number)) => Answer {
                            packet: Outgoing::PubAck {
                                pkid,
                                refusal: None,
                            },
                            durable: Some((number, read_at)),
                        },
                        (_, Err(refusal)) => Answer {
                            packet: Outgoing::PubAck {
                                pkid,
                                refusal: Some(refusal),
                            },
                            durable: None,
                        },
                    }
                }
                Incoming::PingReq => Answer {
                    packet: Outgoing::PingResp,
                    durable: None,
                },
                Incoming::Subscribe { pkid, filters } => Answer {
                    packet: Outgoing::SubAck { pkid, filters },
                    durable: None,
                },
                Incoming::Unsubscribe { pkid, filters } => Answer {
                    packet: Outgoing::UnsubAck { pkid, filters },
                    durable: None,
                },
                Incoming::Disconnect => return Ok(()),
                Incoming::Unexpected(what) => {
                    return Err(MqttError::Protocol(format!("unexpected {what}")));
                }
            };
            if answers.send(answer).await.is_err() {
                // The writer ended; its error tells why.
                return Ok(());
            }
        }
    }

    /// Offers one reading, waiting while the buffer is full; a refusal is
    /// the device's to hear, a failed disk ends the connection.
    async fn publish(
        &self,
        topic: &str,
        payload: bytes::Bytes,
        shutdown: &CancellationToken,
    ) -> Result<Result<u64, Refusal>, MqttError> {
        let parts: Vec<&str> = topic.split('/').collect();
        let named = match parts[..] {
            ["sensors", device_type, device_id] => Some((device_type, device_id)),
            _ => None,
        };
        let origin = || {
            format!(
                "mqtt topic {topic} client {:?} from {} ({})",
                self.client_id,
                self.peer,
                self.identity.describe()
            )
        };
        let message = Message {
            identity: &self.identity,
            topic: named,
            payload,
            origin: &origin,
        };
        if named.is_none() {
            let refusal = Refusal::TopicInvalid(format!(
                "topic {topic:?} is not sensors/<device_type>/<device_id>"
            ));
            self.intake.refuse(&message, &refusal);
            return Ok(Err(refusal));
        }
        loop {
            match self.intake.offer(&message) {
                Err(Refusal::Full(_)) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(MqttError::Buffer("stopped while the buffer was full".into())),
                        _ = self.intake.buffer().space_freed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
                Err(Refusal::Failed(reason)) => return Err(MqttError::Buffer(reason)),
                outcome => return Ok(outcome),
            }
        }
    }
}

/// Writes answers in order, each PUBACK once its reading is durable; a
/// batch of answers ready together goes out in one write, after which each
/// PUBACK's wait since its PUBLISH was read is counted.
async fn write_answers(
    mut writer: OwnedWriteHalf,
    mut queued: mpsc::Receiver<Answer>,
    version: Version,
    intake: Arc<Intake>,
) -> Result<(), MqttError> {
    let mut out = BytesMut::with_capacity(4096);
    let mut read_at = Vec::new();
    while let Some(answer) = queued.recv().await {
        let mut next = Some(answer);
        while let Some(answer) = next {
            if let Some((number, at)) = answer.durable {
                intake
                    .durable(number)
                    .await
                    .map_err(|r| MqttError::Buffer(r.detail().to_string()))?;
                read_at.push(at);
            }
            packets::write(version, answer.packet, &mut out);
            next = queued.try_recv().ok();
        }
        tokio::time::timeout(WRITE_WITHIN, writer.write_all(&out))
            .await
            .map_err(|_| MqttError::Silent(WRITE_WITHIN))??;
        out.clear();
        let ack_times = &intake.stats().ack_times;
        for at in read_at.drain(..) {
            ack_times.record(at.elapsed());
        }
    }
    let _ = writer.shutdown().await;
    Ok(())
}

async fn next_frame_within(
    reader: &mut OwnedReadHalf,
    inbox: &mut BytesMut,
    silence: Option<Duration>,
) -> Result<Option<BytesMut>, MqttError> {
    match silence {
        Some(limit) => tokio::time::timeout(limit, next_frame(reader, inbox))
            .await
            .map_err(|_| MqttError::Silent(limit))?,
        None => next_frame(reader, inbox).await,
    }
}

/// The next whole packet; `None` when the client closed between packets.
async fn next_frame(
    reader: &mut OwnedReadHalf,
    inbox: &mut BytesMut,
) -> Result<Option<BytesMut>, MqttError> {
    loop {
        if let Some(length) = packets::frame_length(inbox)?
            && inbox.len() >= length
        {
            return Ok(Some(inbox.split_to(length)));
        }
        if reader.read_buf(inbox).await? == 0 {
            return if inbox.is_empty() {
                Ok(None)
            } else {
                Err(MqttError::Malformed(
                    "connection closed inside a packet".into(),
                ))
            };
        }
    }
}
