//! One partition's writer: idempotent, several batches in flight, never out of order.
//!
//! The writer holds a producer id from the cluster and numbers its records:
//! each batch carries the sequence number of its first record. The leader
//! appends a batch only if it follows the last one it wrote for that producer,
//! and answers a batch it already wrote with that batch's offsets instead of
//! writing it again. That is what lets the writer keep up to `max_in_flight`
//! batches on the way at once and still retry: a retried batch is written once
//! and in its place, whatever happened to the first attempt's answer.
//!
//! Answers come back in the order the batches were sent (see [`super::wire`]).
//! A batch acknowledged at the head of the line is delivered at once. When an
//! answer fails, nothing new is sent: the writer waits for every answer
//! still due, delivers what was written, pauses (backoff with jitter), and
//! sends the rest again in the same order, on a new connection to the
//! current leader when the old one broke or the leader moved.
//!
//! The leader checks the numbering only for a producer it has heard from:
//! one with no state on the partition yet (a new producer id, or one the
//! broker forgot after a long silence) has its first batch taken whatever its
//! number. So while no batch of the current numbering has been acknowledged,
//! the writer keeps one batch on the way, not several: otherwise a first batch
//! refused as "not the leader" by a broker that learns a moment later that it
//! leads could be overtaken by the second. Once one batch is acknowledged with
//! acks=all, every replica that can become leader holds the producer's state.
//!
//! A batch that can never be written (too large, refused by the broker) or
//! whose delivery deadline passes fails for good, and leaves a gap in the
//! numbering that the leader would refuse to skip; the writer then takes a
//! new producer id and numbers what is left from zero. So does a leader that
//! no longer knows the producer. Only then can a batch whose first answer was
//! lost be written twice; the consumer removes such duplicates by device, run
//! and sequence number.
//!
//! Every record ends in exactly one [`Delivery`] to the caller's listener.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::time::Instant;

use super::answer::{Answer, Failure, Outcome, outcome};
use super::batch::{Batch, Gathered, Pending};
use super::encode::{Encoder, ProducerIdentity};
use super::inbox::Inbox;
use super::linger::{self, Limits, Next, Pipe};
use super::route::Route;
use super::sender::Senders;
use super::{Delivery, DeliveryListener, ProducerSettings, ProducerStats};
use crate::kafka::retry::Backoff;

/// How long an acknowledged numbering counts as known to the leader without
/// another acknowledgement. Brokers forget an idle producer after
/// `producer.id.expiration.ms` (a day by default).
const NUMBERING_REMEMBERED: Duration = Duration::from_secs(600);

pub(super) struct PartitionWriter<M> {
    pub(super) route: Arc<Route>,
    /// The brokers' senders, which carry the batches.
    pub(super) senders: Arc<Senders>,
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) settings: ProducerSettings,
    pub(super) listener: DeliveryListener<M>,
    pub(super) stats: Arc<ProducerStats>,
    /// The producer's buffer, given back a batch at a time.
    pub(super) budget: Arc<Semaphore>,
}

/// A batch on its way, or waiting to be sent again.
struct Sent<M> {
    batch: Batch<M>,
    /// The numbering its records carry, once encoded.
    identity: Option<ProducerIdentity>,
    base_sequence: i32,
    /// The encoded record batch.
    encoded: Option<Bytes>,
    answer: Option<oneshot::Receiver<Answer>>,
    sent_at: Instant,
    outcome: Option<Outcome>,
}

/// What woke the writer.
enum Event {
    Answer(usize, Option<Answer>),
    /// Records may have arrived in the inbox, or it closed.
    Arrived,
    /// The leader's connection became free or busy (`false`: its sender ended).
    Connection(bool),
    Wake,
}

impl<M: Send + 'static> PartitionWriter<M> {
    pub(super) async fn run(self, inbox: Inbox<Pending<M>>) {
        let backoff = Backoff::new(self.settings.retry_backoff, self.settings.retry_backoff_max);
        let mut state = State {
            writer: self,
            inbox,
            inbox_open: true,
            gathered: Gathered::default(),
            in_flight: VecDeque::new(),
            identity: None,
            next_sequence: 0,
            acknowledged: None,
            connection: None,
            encoder: Encoder::default(),
            failed: false,
            backoff,
            rounds: 0,
        };
        state.run().await;
    }
}

struct State<M> {
    writer: PartitionWriter<M>,
    inbox: Inbox<Pending<M>>,
    inbox_open: bool,
    gathered: Gathered<M>,
    in_flight: VecDeque<Sent<M>>,
    identity: Option<ProducerIdentity>,
    next_sequence: i32,
    /// When the leader last acknowledged a batch of the current numbering.
    acknowledged: Option<Instant>,
    /// The leader this writer last sent to, and whether its connection is busy.
    connection: Option<(String, watch::Receiver<bool>)>,
    encoder: Encoder,
    /// An answer failed: nothing new is sent until every answer is in and
    /// the failed batches went out again.
    failed: bool,
    backoff: Backoff,
    /// Failed rounds in a row, for the log.
    rounds: u32,
}

impl<M: Send + 'static> State<M> {
    async fn run(&mut self) {
        let limits = Limits {
            batch_bytes: self.writer.settings.batch_bytes,
            linger: self.writer.settings.linger,
            max_in_flight: self.writer.settings.max_in_flight,
        };
        loop {
            if !self.inbox_open && self.gathered.is_empty() && self.in_flight.is_empty() {
                return;
            }
            if self.failed && self.in_flight.iter().all(|s| s.answer.is_none()) {
                self.recover().await;
                continue;
            }
            if let Some(held) = self.held_back() {
                self.transmit(held).await;
                continue;
            }
            let pipe = Pipe {
                gathered_bytes: self.gathered.bytes(),
                oldest: self.gathered.oldest(),
                in_flight: self.in_flight.len(),
                recovering: self.failed,
                confirmed: self.confirmed(),
                connection_busy: self
                    .connection
                    .as_mut()
                    .is_some_and(|(_, busy)| *busy.borrow_and_update()),
            };
            let wake = match linger::next(pipe, limits, Instant::now()) {
                Next::Send => {
                    self.launch().await;
                    continue;
                }
                Next::SendAt(at) => Some(at),
                Next::Wait => None,
            };
            // Gathered records waiting for the connection wake with it.
            let for_connection = pipe.connection_busy && pipe.gathered_bytes > 0;
            match self.wait(wake, for_connection).await {
                Event::Answer(index, answer) => self.answered(index, answer),
                Event::Arrived => self.gather(),
                Event::Connection(true) => {}
                Event::Connection(false) => self.connection = None,
                Event::Wake => {}
            }
        }
    }

    /// Whether the leader is known to hold the current numbering.
    fn confirmed(&self) -> bool {
        self.acknowledged
            .is_some_and(|at| at.elapsed() < NUMBERING_REMEMBERED)
    }

    /// The first batch held back while the numbering was unconfirmed, once it
    /// may go: the numbering is confirmed, or nothing else is on the way.
    fn held_back(&self) -> Option<usize> {
        if self.failed {
            return None;
        }
        let held = self
            .in_flight
            .iter()
            .position(|s| s.answer.is_none() && s.outcome.is_none())?;
        let awaiting = self.in_flight.iter().any(|s| s.answer.is_some());
        (!awaiting || self.confirmed()).then_some(held)
    }

    /// Waits for the oldest answer due, a record, `wake`, or (`for_connection`)
    /// a change of the leader's connection.
    async fn wait(&mut self, wake: Option<Instant>, for_connection: bool) -> Event {
        // The broker's sender gives up on a request after the request timeout;
        // this limit only guards against an answer that never comes at all.
        let timeout = self.writer.settings.request_timeout * 2 + Duration::from_secs(5);
        let head = self
            .in_flight
            .iter_mut()
            .enumerate()
            .find_map(|(index, sent)| Some((index, sent.sent_at + timeout, sent.answer.as_mut()?)));
        let answering = head.is_some();
        let answer = async move {
            let (index, due, answer) = head.expect("only polled when an answer is due");
            match tokio::time::timeout_at(due, answer).await {
                Ok(Ok(answer)) => Event::Answer(index, Some(answer)),
                Ok(Err(_)) => Event::Answer(
                    index,
                    Some(Err("the broker's sender went away".to_string())),
                ),
                Err(_) => Event::Answer(index, None),
            }
        };
        let receiving = self.inbox_open;
        let watching = for_connection && self.connection.is_some();
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            biased;
            event = answer, if answering => event,
            _ = self.inbox.arrived(), if receiving => Event::Arrived,
            changed = async {
                match self.connection.as_mut() {
                    Some((_, busy)) => busy.changed().await.is_ok(),
                    None => false,
                }
            }, if watching => Event::Connection(changed),
            _ = tokio::time::sleep_until(wake.unwrap_or(far)), if wake.is_some() => Event::Wake,
        }
    }

    /// Takes whatever arrived in the inbox.
    fn gather(&mut self) {
        if self.inbox_open && !self.gathered.take_arrived(&self.inbox) {
            self.inbox_open = false;
        }
    }

    /// Cuts the next batch from the gathered records and sends it.
    async fn launch(&mut self) {
        // The batch carries everything sent so far, woken for or not.
        self.gather();
        let settings = &self.writer.settings;
        let Some(batch) = self
            .gathered
            .take_batch(settings.batch_bytes, &self.writer.budget)
        else {
            return;
        };
        self.in_flight.push_back(Sent {
            batch,
            identity: None,
            base_sequence: 0,
            encoded: None,
            answer: None,
            sent_at: Instant::now(),
            outcome: None,
        });
        self.transmit(self.in_flight.len() - 1).await;
    }

    /// Sends the batches from `from` on, numbering and encoding those that
    /// need it; when the leader cannot be found they wait for the next round.
    /// Under an unconfirmed numbering only the first goes; the rest are held back.
    async fn transmit(&mut self, from: usize) {
        let identity = match self.identity {
            Some(identity) => identity,
            None => match self.writer.route.new_identity().await {
                Ok(identity) => {
                    self.identity = Some(identity);
                    self.next_sequence = 0;
                    self.acknowledged = None;
                    identity
                }
                Err(reason) => return self.not_sent(from, reason, false),
            },
        };
        let partition = self.writer.partition;
        let leader = match self.writer.route.leader(partition).await {
            Ok(leader) => leader,
            Err(reason) => return self.not_sent(from, reason, true),
        };
        if self
            .connection
            .as_ref()
            .is_none_or(|(address, _)| *address != leader)
        {
            self.connection = Some((leader.clone(), self.writer.senders.busy(&leader)));
        }
        let compression = self.writer.settings.compression;
        let batch_bytes = self.writer.settings.batch_bytes;
        let now = Instant::now();
        let confirmed = self.confirmed();
        for (position, sent) in self.in_flight.range_mut(from..).enumerate() {
            sent.outcome = None;
            if position > 0 && !confirmed {
                sent.answer = None;
                continue;
            }
            if sent.identity != Some(identity) {
                sent.identity = Some(identity);
                sent.base_sequence = self.next_sequence;
                let count = sent.batch.records.len() as i32;
                self.next_sequence = self.next_sequence.wrapping_add(count);
                if let Some(old) = sent.encoded.take() {
                    // Its records' bytes went once it was first encoded: it
                    // is numbered again from its encoded form.
                    let renumbered =
                        self.encoder
                            .renumbered(compression, &old, identity, sent.base_sequence);
                    self.encoder.recycle(old);
                    match renumbered {
                        Ok(encoded) => sent.encoded = Some(encoded),
                        Err(reason) => {
                            sent.outcome = Some(Outcome::Failed(Failure::Permanent(reason)));
                            self.failed = true;
                            continue;
                        }
                    }
                }
            }
            if sent.encoded.is_none() {
                let records = sent.batch.records.iter().map(|p| &p.record);
                match self
                    .encoder
                    .record_batch(compression, identity, sent.base_sequence, records)
                {
                    Ok(encoded) => {
                        sent.encoded = Some(encoded);
                        // The encoded batch is all that is sent from now on;
                        // the records' own bytes (their chunk of the
                        // caller's buffer) can go.
                        for pending in &mut sent.batch.records {
                            pending.record.release();
                        }
                    }
                    Err(reason) => {
                        sent.outcome = Some(Outcome::Failed(Failure::Permanent(reason)));
                        self.failed = true;
                        continue;
                    }
                }
            }
            let encoded = sent.encoded.clone().expect("encoded above");
            let full = sent.batch.is_full(batch_bytes);
            sent.answer = Some(
                self.writer
                    .senders
                    .submit(&leader, partition, encoded, full),
            );
            sent.sent_at = now;
        }
    }

    /// Marks the batches from `from` on as not sent this round.
    fn not_sent(&mut self, from: usize, reason: String, moved: bool) {
        for sent in self.in_flight.range_mut(from..) {
            sent.answer = None;
            sent.outcome = Some(Outcome::Failed(Failure::Retry {
                reason: reason.clone(),
                moved,
            }));
        }
        self.failed = true;
    }

    /// Takes in the answer for `in_flight[index]` (`None`: it never came).
    fn answered(&mut self, index: usize, answer: Option<Answer>) {
        let partition = self.writer.partition;
        self.in_flight[index].answer = None;
        let answer =
            answer.unwrap_or_else(|| Err("no answer from the broker's sender".to_string()));
        let outcome = outcome(answer, index == 0);
        match &outcome {
            Outcome::Written(_) => {
                self.backoff.reset();
                self.rounds = 0;
                if self.in_flight[index].identity == self.identity {
                    self.acknowledged = Some(Instant::now());
                }
            }
            Outcome::Failed(failure) => {
                self.failed = true;
                if matches!(failure, Failure::Retry { moved: true, .. }) {
                    self.writer.route.forget(partition);
                }
            }
        }
        self.in_flight[index].outcome = Some(outcome);
        if !self.failed {
            while let Some(Some(Outcome::Written(_))) = self.in_flight.front().map(|s| &s.outcome) {
                let sent = self.in_flight.pop_front().expect("checked above");
                self.written(sent);
            }
        }
    }

    /// After a failed answer, with every answer in: delivers what was
    /// written, fails what cannot be, pauses, and sends the rest again.
    async fn recover(&mut self) {
        self.failed = false;
        self.rounds += 1;
        let mut renumber = false;
        // The first failure in line is the cause; those behind it follow from it.
        let mut cause = String::new();
        let mut retry = VecDeque::new();
        for sent in std::mem::take(&mut self.in_flight) {
            match sent.outcome.clone() {
                Some(Outcome::Written(_)) => self.written(sent),
                Some(Outcome::Failed(Failure::Permanent(reason))) => {
                    renumber = true;
                    self.fail(sent, format!("{reason} (not retriable)"));
                }
                Some(Outcome::Failed(Failure::Refused(reason))) => {
                    renumber = true;
                    let topic = &self.writer.topic;
                    self.writer
                        .stats
                        .refused
                        .get_or_init(|| format!("the cluster refused writes to {topic}: {reason}"));
                    self.fail(sent, format!("{reason} (refused)"));
                }
                Some(Outcome::Failed(Failure::Renumber(reason))) => {
                    renumber = true;
                    if cause.is_empty() {
                        cause = reason;
                    }
                    retry.push_back(sent);
                }
                Some(Outcome::Failed(Failure::Retry { reason, .. })) => {
                    if cause.is_empty() {
                        cause = reason;
                    }
                    retry.push_back(sent);
                }
                None => retry.push_back(sent),
            }
        }
        if retry.is_empty() {
            if renumber {
                self.identity = None;
            }
            return;
        }
        let pause = self.backoff.next_delay();
        let resume = Instant::now() + pause;
        let delivery_timeout = self.writer.settings.delivery_timeout;
        let (due, expired): (Vec<_>, Vec<_>) = retry
            .into_iter()
            .partition(|s| s.batch.deadline(delivery_timeout) > resume);
        let rounds = self.rounds;
        for sent in expired {
            renumber = true;
            let reason = format!(
                "delivery deadline of {delivery_timeout:?} passed after {rounds} attempts; last error: {cause}"
            );
            self.fail(sent, reason);
        }
        if due.is_empty() {
            self.identity = None;
            return;
        }
        let records: usize = due.iter().map(|s| s.batch.records.len()).sum();
        self.writer
            .stats
            .retries
            .fetch_add(due.len() as u64, Ordering::Relaxed);
        if rounds == 1 || rounds.is_power_of_two() {
            tracing::warn!(
                "produce to {}-{} failed (attempt {rounds}, {} batches, {records} records): {cause}; retrying{}",
                self.writer.topic,
                self.writer.partition,
                due.len(),
                if renumber {
                    " under a new producer id"
                } else {
                    ""
                }
            );
        }
        if renumber {
            self.identity = None;
        }
        self.in_flight = due.into();
        tokio::time::sleep_until(resume).await;
        self.transmit(0).await;
    }

    /// Reports a written batch's records as acknowledged.
    fn written(&mut self, sent: Sent<M>) {
        let Some(Outcome::Written(base_offset)) = sent.outcome else {
            unreachable!("only written batches are reported written");
        };
        let stats = &self.writer.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .acked
            .fetch_add(sent.batch.records.len() as u64, Ordering::Relaxed);
        if let Some(encoded) = sent.encoded {
            self.encoder.recycle(encoded);
        }
        let partition = self.writer.partition;
        let Batch {
            mut records,
            held: _held,
        } = sent.batch;
        for (index, pending) in records.drain(..).enumerate() {
            let offset = if base_offset < 0 {
                -1
            } else {
                base_offset + index as i64
            };
            (self.writer.listener)(pending.meta, Delivery::Acked { partition, offset });
        }
        self.gathered.give_back(records);
    }

    /// Reports a batch's records as failed.
    fn fail(&mut self, sent: Sent<M>, reason: String) {
        let partition = self.writer.partition;
        let count = sent.batch.records.len();
        tracing::error!(
            "{count} records for {}-{partition} failed: {reason}",
            self.writer.topic
        );
        self.writer
            .stats
            .failed
            .fetch_add(count as u64, Ordering::Relaxed);
        if let Some(encoded) = sent.encoded {
            self.encoder.recycle(encoded);
        }
        let Batch {
            mut records,
            held: _held,
        } = sent.batch;
        for pending in records.drain(..) {
            let delivery = Delivery::Failed {
                partition,
                reason: reason.clone(),
            };
            (self.writer.listener)(pending.meta, delivery);
        }
        self.gathered.give_back(records);
    }
}
