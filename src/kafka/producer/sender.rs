//! One connection per broker, carrying the ready batches of every partition it leads.
//!
//! A Produce request costs the brokers much the same whatever it carries,
//! and with `acks=all` each one also sets off the followers' fetches. Brokers
//! that share their cores with each other (or with us) spend most of their
//! time on requests, not on bytes. So each broker gets one sender: it takes
//! the batches the partition writers have ready for partitions that broker
//! leads, puts one batch per partition into a request (Kafka allows no more),
//! and sends it. While that request is on its way, batches that become ready
//! wait and go together in the next one. A broker reads a connection's next
//! request only once it has answered the one before, so a second request in
//! flight would wait at the broker instead of gathering batches here. With
//! three brokers sharing two cores, `metrocloud bench e2e` gave a median of
//! 20 ms at 1,000 readings/s and 59 ms at 50,000 with up to five requests in
//! flight, and 3.2 ms and 14.5 ms with one (Kafka's producer in the same
//! runs: 9 and 32 ms, then 5 and 6 ms: the machine was busier in the first).
//!
//! The partition writers see whether their leader's connection carries a
//! request, and while it does they keep gathering instead of cutting a batch
//! that would only wait here (see [`super::linger`]). When the answer comes
//! the sender says so before it hands the answers out, the writers cut their
//! batches at once, and the sender lets them run for a moment before it
//! builds the next request, so that it carries the batches of every partition
//! the broker leads, with everything sent until then. The same build with and
//! without this, alternating on one warm cluster (`bench-worker` end to end,
//! 10 s each): send→ack median 2.5 and 2.6 ms against 5.4 and 5.5 at 10,000
//! readings/s, 3.8 against 6.8 ms at 50,000, with the same throughput.
//!
//! A producer whose records need not arrive soon (their senders have had
//! their answer already) can space its requests: after a
//! request the connection stays busy for the writers until the spacing has
//! passed since it was sent, so everything gathered meanwhile goes in the next
//! one. At 10,000 readings/s a 20 ms spacing cut the brokers' CPU from 1.5
//! cores to 0.4. A lone record on a connection idle for longer goes at once,
//! and a full batch (cut at the batch size) ends the spacing, as it ends a
//! linger: a long spacing bounds the requests of a light load without
//! capping a heavy one, whose requests are full anyway.
//!
//! A broker answers the requests of one connection in order, and the sender
//! keeps each partition's batches in the order its writer handed them over,
//! so a partition's batches are written in order. Every batch gets exactly
//! one [`Answer`]: its partition's part of the broker's answer, or why there
//! is none (no connection, no answer in time, an answer that cannot be read).
//! What to do then is the partition writer's business ([`super::writer`]).

use crate::kafka::security::Security;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::answer::{Answer, partition_answers};
use super::encode::{Encoder, RequestShape};
use super::wire::{Pipeline, WireError};
use crate::lock::lock;

/// Times the sender lets the partition writers run before it cuts a request,
/// picking up the batches they hand over meanwhile.
const GATHER_ROUNDS: usize = 2;

/// Bytes of batches one request carries, at most (brokers refuse requests
/// over `socket.request.max.bytes`, 100 MiB by default).
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// A batch ready for its partition's leader.
struct Ready {
    partition: i32,
    batch: Bytes,
    /// Cut at the batch size: a request's worth has gathered, no spacing
    /// holds it back.
    full: bool,
    reply: oneshot::Sender<Answer>,
}

/// How the senders send.
#[derive(Debug, Clone)]
pub(super) struct SenderSettings {
    pub(super) shape: RequestShape,
    pub(super) request_timeout: Duration,
    /// Shortest time from one request to the next on a connection.
    pub(super) spacing: Duration,
    /// How connections to the brokers are opened.
    pub(super) security: std::sync::Arc<Security>,
}

/// The senders of one producer, one per broker address, started on first use.
pub(super) struct Senders {
    settings: SenderSettings,
    by_address: Mutex<HashMap<String, Handle>>,
}

/// A running sender: where its batches go, and whether its connection
/// carries a request now (the partition writers gather until it is free).
struct Handle {
    queue: mpsc::UnboundedSender<Ready>,
    busy: watch::Receiver<bool>,
}

impl Senders {
    pub(super) fn new(settings: SenderSettings) -> Senders {
        Senders {
            settings,
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// Hands `batch` of `partition` to the sender of the broker at `address`;
    /// its answer comes back on the receiver.
    pub(super) fn submit(
        &self,
        address: &str,
        partition: i32,
        batch: Bytes,
        full: bool,
    ) -> oneshot::Receiver<Answer> {
        let (reply, answer) = oneshot::channel();
        let ready = Ready {
            partition,
            batch,
            full,
            reply,
        };
        let mut senders = lock(&self.by_address);
        if let Err(mpsc::error::SendError(ready)) =
            self.handle(&mut senders, address).queue.send(ready)
        {
            // Its task ended between the look and the send: a new one takes over.
            senders.remove(address);
            let _ = self.handle(&mut senders, address).queue.send(ready);
        }
        answer
    }

    /// Whether the connection to `address` carries a request, as it changes.
    pub(super) fn busy(&self, address: &str) -> watch::Receiver<bool> {
        let mut senders = lock(&self.by_address);
        self.handle(&mut senders, address).busy.clone()
    }

    /// The running sender for `address`, started when there is none.
    fn handle<'a>(&self, senders: &'a mut HashMap<String, Handle>, address: &str) -> &'a Handle {
        if senders.get(address).is_some_and(|h| h.queue.is_closed()) {
            senders.remove(address);
        }
        senders.entry(address.to_string()).or_insert_with(|| {
            let (queue, incoming) = mpsc::unbounded_channel();
            let (busy_tx, busy) = watch::channel(false);
            tokio::spawn(run(
                address.to_string(),
                self.settings.clone(),
                incoming,
                busy_tx,
            ));
            Handle { queue, busy }
        })
    }
}

/// A request on its way, and whose batches it carries.
struct InFlight {
    answer: oneshot::Receiver<Result<Bytes, WireError>>,
    sent_at: Instant,
    version: i16,
    request: Bytes,
    replies: Vec<(i32, oneshot::Sender<Answer>)>,
}

/// One broker's sender; ends once every producer handle to it is gone and
/// everything it was given is answered.
async fn run(
    address: String,
    settings: SenderSettings,
    mut incoming: mpsc::UnboundedReceiver<Ready>,
    busy: watch::Sender<bool>,
) {
    let mut waiting: VecDeque<Ready> = VecDeque::new();
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut pipeline: Option<Pipeline> = None;
    let mut encoder = Encoder::default();
    let mut open = true;
    // While set, the connection stays busy for the writers (they go on
    // gathering) though nothing is in flight: the spacing since the last request.
    let mut spaced_until: Option<Instant> = None;
    let mut last_sent: Option<Instant> = None;
    loop {
        if !open && waiting.is_empty() && in_flight.is_empty() {
            return;
        }
        if !waiting.is_empty() && in_flight.is_empty() && spaced_until.is_none() {
            // The writers that waited for the connection cut their batches
            // as it freed: a moment for them to arrive, so that one request
            // carries them all.
            for _ in 0..GATHER_ROUNDS {
                tokio::task::yield_now().await;
                while let Ok(more) = incoming.try_recv() {
                    waiting.push_back(more);
                }
            }
            let request = next_request(&mut waiting);
            if !pipeline.as_ref().is_some_and(Pipeline::is_open) {
                pipeline = None;
                match Pipeline::connect(
                    &address,
                    &settings.security,
                    &settings.shape.client_id,
                    settings.request_timeout,
                )
                .await
                {
                    Ok(connected) => pipeline = Some(connected),
                    Err(e) => {
                        answer_all(
                            request.into_iter().map(|r| (r.partition, r.reply)),
                            &e.to_string(),
                        );
                        continue;
                    }
                }
            }
            let connection = pipeline.as_ref().expect("connected above");
            let version = connection.produce_version();
            let (batches, replies): (Vec<_>, Vec<_>) = request
                .into_iter()
                .map(|r| ((r.partition, r.batch), (r.partition, r.reply)))
                .unzip();
            match encoder.produce_request(&settings.shape, version, &batches) {
                Ok(message) => {
                    drop(batches);
                    busy.send_replace(true);
                    let sent_at = Instant::now();
                    last_sent = Some(sent_at);
                    in_flight.push_back(InFlight {
                        answer: connection.send(message.clone()),
                        sent_at,
                        version,
                        request: message,
                        replies,
                    });
                }
                Err(reason) => answer_all(replies, &reason),
            }
            continue;
        }
        let head = in_flight
            .front_mut()
            .map(|f| (f.sent_at + settings.request_timeout, &mut f.answer));
        let answering = head.is_some();
        let answer = async move {
            let (due, answer) = head.expect("only polled with a request in flight");
            tokio::time::timeout_at(due, answer).await
        };
        tokio::select! {
            biased;
            answered = answer, if answering => {
                let sent = in_flight.pop_front().expect("answered the head");
                let timeout = settings.request_timeout;
                let frame = match answered {
                    Ok(Ok(Ok(frame))) => Ok(frame),
                    Ok(Ok(Err(error))) => Err(error.to_string()),
                    Ok(Err(_)) => Err(format!("connection to {address} closed")),
                    Err(_) => Err(format!("no answer from {address} within {timeout:?}")),
                };
                let failed = frame.is_err();
                // Free before the answers go out: a writer that gets its
                // answer cuts its next batch at once. Unless the next request
                // must wait for the spacing: then free when it has passed.
                if in_flight.is_empty() {
                    let full = waiting.iter().any(|r| r.full);
                    match last_sent.map(|at| at + settings.spacing) {
                        Some(at) if !failed && !full && at > Instant::now() => {
                            spaced_until = Some(at)
                        }
                        _ => {
                            busy.send_replace(false);
                        }
                    }
                }
                deliver(sent.replies, frame.and_then(|f| partition_answers(f, sent.version)));
                encoder.recycle(sent.request);
                // The answers behind an overdue or unreadable one would wait behind it.
                if failed && let Some(connection) = pipeline.take() {
                    connection.abandon("an answer failed or is overdue");
                }
            }
            _ = tokio::time::sleep_until(spaced_until.unwrap_or_else(Instant::now)), if spaced_until.is_some() => {
                spaced_until = None;
                busy.send_replace(false);
            }
            ready = incoming.recv(), if open => match ready {
                Some(ready) => {
                    waiting.push_back(ready);
                    while let Ok(more) = incoming.try_recv() {
                        waiting.push_back(more);
                    }
                    // A full batch ends the spacing, as a full batch ends a linger.
                    if spaced_until.is_some() && waiting.iter().any(|r| r.full) {
                        spaced_until = None;
                        busy.send_replace(false);
                    }
                }
                None => open = false,
            },
        }
    }
}

/// The batches of the next request: the oldest waiting batch of each
/// partition, up to [`MAX_REQUEST_BYTES`]; the rest keep their order.
fn next_request(waiting: &mut VecDeque<Ready>) -> Vec<Ready> {
    let mut request: Vec<Ready> = Vec::new();
    let mut bytes = 0;
    let mut later = VecDeque::new();
    while let Some(ready) = waiting.pop_front() {
        let taken = request.iter().any(|r| r.partition == ready.partition);
        if taken || (!request.is_empty() && bytes + ready.batch.len() > MAX_REQUEST_BYTES) {
            later.push_back(ready);
        } else {
            bytes += ready.batch.len();
            request.push(ready);
        }
    }
    *waiting = later;
    request
}

/// Gives each batch its partition's part of the answer.
fn deliver(
    replies: Vec<(i32, oneshot::Sender<Answer>)>,
    answers: Result<Vec<(i32, super::answer::PartitionAnswer)>, String>,
) {
    match answers {
        Ok(answers) => {
            for (partition, reply) in replies {
                let answer = answers
                    .iter()
                    .find(|(p, _)| *p == partition)
                    .map(|(_, a)| a.clone())
                    .ok_or_else(|| format!("the answer has no part for partition {partition}"));
                let _ = reply.send(answer);
            }
        }
        Err(reason) => answer_all(replies, &reason),
    }
}

fn answer_all(replies: impl IntoIterator<Item = (i32, oneshot::Sender<Answer>)>, reason: &str) {
    for (_, reply) in replies {
        let _ = reply.send(Err(reason.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(partition: i32, bytes: usize) -> Ready {
        Ready {
            partition,
            batch: Bytes::from(vec![0u8; bytes]),
            full: false,
            reply: oneshot::channel().0,
        }
    }

    fn partitions(batches: &[Ready]) -> Vec<i32> {
        batches.iter().map(|r| r.partition).collect()
    }

    #[test]
    fn a_request_carries_one_batch_per_partition_and_later_ones_keep_their_order() {
        let mut waiting: VecDeque<Ready> = [
            ready(1, 10),
            ready(2, 10),
            ready(1, 20),
            ready(3, 10),
            ready(1, 30),
        ]
        .into();
        let first = next_request(&mut waiting);
        assert_eq!(partitions(&first), [1, 2, 3]);
        assert_eq!(first[0].batch.len(), 10, "partition 1's oldest batch");
        let second = next_request(&mut waiting);
        assert_eq!(partitions(&second), [1]);
        assert_eq!(second[0].batch.len(), 20);
        let third = next_request(&mut waiting);
        assert_eq!(third[0].batch.len(), 30);
        assert!(waiting.is_empty());
    }

    #[test]
    fn a_request_stops_growing_at_its_size_limit_but_always_carries_one_batch() {
        let big = MAX_REQUEST_BYTES - 10;
        let mut waiting: VecDeque<Ready> = [ready(1, big), ready(2, 100), ready(3, 5)].into();
        let first = next_request(&mut waiting);
        assert_eq!(partitions(&first), [1, 3]);
        assert_eq!(partitions(&next_request(&mut waiting)), [2]);

        let mut oversized: VecDeque<Ready> = [ready(4, MAX_REQUEST_BYTES * 2)].into();
        assert_eq!(partitions(&next_request(&mut oversized)), [4]);
    }

    #[test]
    fn each_batch_gets_its_partitions_part_of_the_answer_or_the_reason_there_is_none() {
        use super::super::answer::PartitionAnswer;
        let (one, mut one_answer) = oneshot::channel();
        let (two, mut two_answer) = oneshot::channel();
        let part = |offset| PartitionAnswer {
            error_code: 0,
            base_offset: offset,
            message: None,
        };
        deliver(
            vec![(1, one), (2, two)],
            Ok(vec![(2, part(7)), (1, part(3))]),
        );
        assert_eq!(one_answer.try_recv().unwrap(), Ok(part(3)));
        assert_eq!(two_answer.try_recv().unwrap(), Ok(part(7)));

        let (lost, mut lost_answer) = oneshot::channel();
        deliver(vec![(5, lost)], Ok(vec![(1, part(0))]));
        assert!(
            lost_answer.try_recv().unwrap().is_err(),
            "no part for partition 5"
        );

        let (cut, mut cut_answer) = oneshot::channel();
        deliver(vec![(1, cut)], Err("connection closed".to_string()));
        assert_eq!(
            cut_answer.try_recv().unwrap(),
            Err("connection closed".to_string())
        );
    }
}
