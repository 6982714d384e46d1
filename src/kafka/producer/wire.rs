//! One partition writer's connection to its leader, with several produce
//! requests in flight.
//!
//! A broker reads one request from a connection, answers it, and only then
//! reads the next, so answers come back in the order requests were written.
//! This connection therefore writes requests as they come, without waiting for
//! earlier answers, and matches each answer to the oldest request still
//! waiting, checking its correlation id. Keeping requests in flight saves the
//! round trip between one batch's acknowledgement and the next batch's
//! arrival; order within the partition is kept by the idempotent producer's
//! sequence numbers (see [`super::writer`]).
//!
//! The connection is opened like every other (TLS and SASL as configured,
//! then the API versions), by [`BrokerConnection`], and taken over from it.
//! Requests arrive already encoded ([`super::encode`]). The connection writes
//! the 4-byte frame length, the request's first bytes with its own correlation
//! id in place, and the rest, with one vectored write: no copy of the batch,
//! and TCP_NODELAY set when the socket is opened. Answers are read into one
//! reused buffer, several per read when they are there.
//!
//! A connection that fails (closed, broken, a frame that does not follow the
//! protocol) fails every request waiting on it; the writer decides what to do
//! with them. Dropping the last handle, or [`Pipeline::abandon`], closes it.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::kafka::admin::{AdminError, BrokerConnection, Timeouts};
use crate::kafka::security::Security;
use crate::kafka::transport::{ReadHalf, WriteHalf};
use crate::lock::lock;

/// Largest answer accepted; anything bigger is a framing error, not data.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Highest Produce version used: version 13 names topics by id instead of name.
pub(super) const MAX_PRODUCE_VERSION: i16 = 12;

/// Why a request on this connection got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum WireError {
    /// The connection could not be opened in time.
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    /// The broker refused the client's identity, or the two sides do not
    /// speak the same security protocol: connecting again cannot help.
    #[error("{0}")]
    Refused(String),
    /// The connection broke, or was closed, before the answer came.
    #[error("connection to {address} closed: {reason}")]
    Closed { address: String, reason: String },
    /// The broker does not offer a version of Produce this client speaks.
    #[error("broker {address} does not accept Produce versions 3 to {MAX_PRODUCE_VERSION}")]
    Unsupported { address: String },
}

/// A request waiting for its answer.
struct Waiting {
    correlation_id: i32,
    reply: oneshot::Sender<Result<Bytes, WireError>>,
}

/// A request to write: the encoded header and body, and where its answer goes.
struct Outgoing {
    message: Bytes,
    reply: oneshot::Sender<Result<Bytes, WireError>>,
}

/// The connection's state shared by its two tasks.
struct Shared {
    address: String,
    waiting: Mutex<VecDeque<Waiting>>,
    /// Cancelled when the connection is closed for any reason.
    closed: CancellationToken,
    /// Why it closed, for the requests that come after.
    reason: Mutex<Option<String>>,
}

impl Shared {
    /// Closes the connection and fails every waiting request with `reason`.
    fn close(&self, reason: String) {
        {
            let mut slot = lock(&self.reason);
            if slot.is_none() {
                *slot = Some(reason.clone());
            }
        }
        self.closed.cancel();
        let waiting = std::mem::take(&mut *lock(&self.waiting));
        for waiter in waiting {
            let _ = waiter.reply.send(Err(self.closed_error()));
        }
    }

    fn closed_error(&self) -> WireError {
        WireError::Closed {
            address: self.address.clone(),
            reason: lock(&self.reason)
                .clone()
                .unwrap_or_else(|| "closed".to_string()),
        }
    }
}

/// A pipelined connection to one broker; see the module documentation.
pub(super) struct Pipeline {
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    produce_version: i16,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shared.close("no longer used".to_string());
    }
}

impl Pipeline {
    /// Opens a connection to `address` and learns which Produce version to use.
    pub(super) async fn connect(
        address: &str,
        security: &Security,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Pipeline, WireError> {
        let timeouts = Timeouts {
            connect: timeout,
            request: timeout,
        };
        let opening = BrokerConnection::connect(address, security, timeouts, client_id);
        let connection = tokio::time::timeout(timeout, opening)
            .await
            .map_err(|_| WireError::Connect {
                address: address.to_string(),
                reason: format!("no answer within {timeout:?}"),
            })?
            .map_err(|e: AdminError| {
                if e.is_permanent() {
                    WireError::Refused(e.to_string())
                } else {
                    WireError::Connect {
                        address: address.to_string(),
                        reason: e.to_string(),
                    }
                }
            })?;
        let (stream, supported) = connection.into_parts();
        let produce_version = supported
            .get(&(ApiKey::Produce as i16))
            .map(|&(_, highest)| highest.min(MAX_PRODUCE_VERSION))
            .filter(|&version| version >= 3)
            .ok_or_else(|| WireError::Unsupported {
                address: address.to_string(),
            })?;
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            address: address.to_string(),
            waiting: Mutex::new(VecDeque::new()),
            closed: CancellationToken::new(),
            reason: Mutex::new(None),
        });
        let (outgoing, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_requests(Arc::clone(&shared), write, queue));
        tokio::spawn(read_answers(Arc::clone(&shared), read));
        Ok(Pipeline {
            shared,
            outgoing,
            produce_version,
        })
    }

    /// The Produce version both sides speak.
    pub(super) fn produce_version(&self) -> i16 {
        self.produce_version
    }

    /// Queues an encoded request (header with any correlation id, then body);
    /// its answer's body, header included, comes back on the receiver.
    pub(super) fn send(&self, message: Bytes) -> oneshot::Receiver<Result<Bytes, WireError>> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(rejected)) =
            self.outgoing.send(Outgoing { message, reply })
        {
            let _ = rejected.reply.send(Err(self.shared.closed_error()));
        }
        answer
    }

    /// Whether the connection still works.
    pub(super) fn is_open(&self) -> bool {
        !self.shared.closed.is_cancelled()
    }

    /// Closes the connection: every request still waiting fails. Used when an
    /// answer is overdue, since later answers on the same connection wait behind it.
    pub(super) fn abandon(&self, reason: &str) {
        self.shared.close(reason.to_string());
    }
}

/// Writes queued requests in order, each with the next correlation id.
async fn write_requests(
    shared: Arc<Shared>,
    mut socket: WriteHalf,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut correlation_id: i32 = 1;
    loop {
        let next = tokio::select! {
            _ = shared.closed.cancelled() => break,
            next = queue.recv() => next,
        };
        let Some(Outgoing { message, reply }) = next else {
            break;
        };
        if message.len() < 8 {
            let _ = reply.send(Err(shared.closed_error()));
            continue;
        }
        let id = correlation_id;
        correlation_id = correlation_id.wrapping_add(1);
        {
            let mut waiting = lock(&shared.waiting);
            if shared.closed.is_cancelled() {
                drop(waiting);
                let _ = reply.send(Err(shared.closed_error()));
                break;
            }
            waiting.push_back(Waiting {
                correlation_id: id,
                reply,
            });
        }
        let written = tokio::select! {
            _ = shared.closed.cancelled() => break,
            written = write_frame(&mut socket, &message, id) => written,
        };
        if let Err(e) = written {
            shared.close(format!("write failed: {e}"));
            break;
        }
    }
    let _ = socket.shutdown().await;
}

/// Writes one frame: length, API key and version, `correlation_id`, and the
/// rest of `message` from its ninth byte, in as few system calls as the socket allows.
async fn write_frame(
    socket: &mut WriteHalf,
    message: &[u8],
    correlation_id: i32,
) -> std::io::Result<()> {
    let mut head = [0u8; 12];
    head[..4].copy_from_slice(&(message.len() as i32).to_be_bytes());
    head[4..8].copy_from_slice(&message[..4]);
    head[8..].copy_from_slice(&correlation_id.to_be_bytes());
    let tail = &message[8..];
    let total = head.len() + tail.len();
    let mut written = 0;
    while written < total {
        let n = if written < head.len() {
            let slices = [IoSlice::new(&head[written..]), IoSlice::new(tail)];
            socket.write_vectored(&slices).await?
        } else {
            socket.write(&tail[written - head.len()..]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    // TLS holds what was written until flushed; plain TCP has nothing to flush.
    socket.flush().await
}

/// Reads answers and hands each to the oldest waiting request.
async fn read_answers(shared: Arc<Shared>, mut socket: ReadHalf) {
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let reason = loop {
        let frame = tokio::select! {
            _ = shared.closed.cancelled() => return,
            frame = read_frame(&mut socket, &mut buffer) => frame,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => break e.to_string(),
        };
        let answered = frame
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let waiter = lock(&shared.waiting).pop_front();
        match (waiter, answered) {
            (Some(waiter), Some(id)) if waiter.correlation_id == id => {
                let _ = waiter.reply.send(Ok(frame));
            }
            (Some(waiter), answered) => {
                let reason = format!(
                    "answer with correlation id {answered:?} where {} was expected",
                    waiter.correlation_id
                );
                let _ = waiter.reply.send(Err(WireError::Closed {
                    address: shared.address.clone(),
                    reason: reason.clone(),
                }));
                break reason;
            }
            (None, _) => break "an answer no request was waiting for".to_string(),
        }
    };
    shared.close(reason);
}

/// The next whole frame from the socket, without its length prefix.
async fn read_frame(socket: &mut ReadHalf, buffer: &mut BytesMut) -> std::io::Result<Bytes> {
    while buffer.len() < 4 {
        fill(socket, buffer, 4).await?;
    }
    let length = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
    if length > MAX_RESPONSE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("an answer of {length} bytes is larger than allowed"),
        ));
    }
    while buffer.len() < 4 + length {
        fill(socket, buffer, 4 + length).await?;
    }
    buffer.advance(4);
    Ok(buffer.split_to(length).freeze())
}

/// Reads whatever the socket has, making room for at least `wanted` bytes in all.
async fn fill(socket: &mut ReadHalf, buffer: &mut BytesMut, wanted: usize) -> std::io::Result<()> {
    buffer.reserve(wanted.saturating_sub(buffer.len()).max(16 * 1024));
    if socket.read_buf(buffer).await? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed by the broker",
        ));
    }
    Ok(())
}
