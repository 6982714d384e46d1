//! When a partition's gathered records go out: the adaptive linger.
//!
//! A fixed linger makes every record wait, even when nothing else is on the
//! way and the broker is idle. The rule here waits only when waiting can pay:
//!
//! - nothing in flight for the partition: send now; there is no answer to
//!   wait for, and a lone record should not sit out the linger;
//! - a full batch: send now, while there is an in-flight slot;
//! - one batch in flight: gather until the oldest gathered record has waited
//!   the linger, or an answer frees the pipe (then the rule is asked again);
//! - two or more in flight: the broker's sender carries one request at a
//!   time ([`super::sender`]), so a batch already waits for the next one;
//!   another batch would only follow it one request later. Records gather
//!   into a bigger batch until an answer comes.
//!
//! - a numbering the leader has not acknowledged yet (see [`super::writer`]):
//!   one batch at a time, until the first is written;
//! - the leader's connection busy with a request (of this partition or of
//!   another the broker leads): keep gathering, unless the batch is full,
//!   until it is free. A batch cut now would only wait for that request at
//!   the broker's sender, and the records arriving meanwhile would miss the
//!   next request and wait for the one after. Cut when the connection frees,
//!   the batch carries them too.
//!
//! Under light load every record goes out at once; under heavy load batches
//! fill while earlier ones are acknowledged, which is when batching is worth
//! having. The linger only bounds how long a record can wait behind requests
//! in flight.

use std::time::Duration;

use tokio::time::Instant;

/// What the writer does next with its gathered records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Send a batch now.
    Send,
    /// Keep gathering; send at this instant unless something changes first.
    SendAt(Instant),
    /// Nothing to send, or no slot to send it in: wait for a record or an answer.
    Wait,
}

/// The partition's state the decision looks at.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pipe {
    /// Bytes gathered and not yet sent.
    pub(super) gathered_bytes: usize,
    /// When the oldest gathered record arrived.
    pub(super) oldest: Option<Instant>,
    /// Requests sent and not yet answered.
    pub(super) in_flight: usize,
    /// Whether earlier batches are being retried: nothing new goes out meanwhile.
    pub(super) recovering: bool,
    /// Whether the leader has acknowledged a batch of the writer's current
    /// numbering; until then one batch goes out at a time.
    pub(super) confirmed: bool,
    /// Whether the leader's connection carries a request now.
    pub(super) connection_busy: bool,
}

/// The limits the decision applies.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) batch_bytes: usize,
    pub(super) linger: Duration,
    pub(super) max_in_flight: usize,
}

/// Decides what to do now; see the module documentation.
pub(super) fn next(pipe: Pipe, limits: Limits, now: Instant) -> Next {
    let Some(oldest) = pipe.oldest else {
        return Next::Wait;
    };
    let max_in_flight = if pipe.confirmed {
        limits.max_in_flight
    } else {
        1
    };
    if pipe.gathered_bytes == 0 || pipe.recovering || pipe.in_flight >= max_in_flight {
        return Next::Wait;
    }
    if pipe.gathered_bytes >= limits.batch_bytes {
        return Next::Send;
    }
    if pipe.connection_busy {
        return Next::Wait;
    }
    if pipe.in_flight == 0 {
        return Next::Send;
    }
    if pipe.in_flight >= 2 {
        return Next::Wait;
    }
    let due = oldest + limits.linger;
    if now >= due {
        Next::Send
    } else {
        Next::SendAt(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        batch_bytes: 1_000,
        linger: Duration::from_millis(5),
        max_in_flight: 5,
    };

    fn pipe(gathered_bytes: usize, in_flight: usize) -> (Pipe, Instant) {
        let now = Instant::now();
        let pipe = Pipe {
            gathered_bytes,
            oldest: (gathered_bytes > 0).then_some(now),
            in_flight,
            recovering: false,
            confirmed: true,
            connection_busy: false,
        };
        (pipe, now)
    }

    #[test]
    fn a_record_on_an_idle_pipe_goes_out_at_once() {
        let (pipe, now) = pipe(80, 0);
        assert_eq!(next(pipe, LIMITS, now), Next::Send);
    }

    #[test]
    fn with_a_batch_in_flight_records_gather_until_the_linger_has_passed() {
        let (pipe, now) = pipe(80, 1);
        assert_eq!(next(pipe, LIMITS, now), Next::SendAt(now + LIMITS.linger));
        assert_eq!(
            next(pipe, LIMITS, now + Duration::from_millis(4)),
            Next::SendAt(now + LIMITS.linger)
        );
        assert_eq!(next(pipe, LIMITS, now + LIMITS.linger), Next::Send);
    }

    #[test]
    fn with_a_batch_already_waiting_for_the_next_request_records_gather_until_an_answer() {
        let (pipe, now) = pipe(80, 2);
        assert_eq!(next(pipe, LIMITS, now + Duration::from_secs(1)), Next::Wait);
    }

    #[test]
    fn a_full_batch_goes_out_without_waiting_for_the_linger() {
        let (pipe, now) = pipe(1_000, 3);
        assert_eq!(next(pipe, LIMITS, now), Next::Send);
    }

    #[test]
    fn when_every_slot_is_taken_even_a_full_batch_waits_for_an_answer() {
        let (pipe, now) = pipe(5_000, 5);
        assert_eq!(next(pipe, LIMITS, now + Duration::from_secs(1)), Next::Wait);
    }

    #[test]
    fn nothing_new_goes_out_while_earlier_batches_are_retried() {
        let (mut pipe, now) = pipe(5_000, 0);
        pipe.recovering = true;
        assert_eq!(next(pipe, LIMITS, now), Next::Wait);
    }

    #[test]
    fn until_the_leader_acknowledges_the_numbering_one_batch_goes_out_at_a_time() {
        let (mut pipe, now) = pipe(5_000, 0);
        pipe.confirmed = false;
        assert_eq!(next(pipe, LIMITS, now), Next::Send);
        pipe.in_flight = 1;
        assert_eq!(next(pipe, LIMITS, now + Duration::from_secs(1)), Next::Wait);
        pipe.confirmed = true;
        assert_eq!(next(pipe, LIMITS, now), Next::Send);
    }

    #[test]
    fn while_the_leaders_connection_is_busy_records_gather_until_it_frees_unless_the_batch_is_full()
    {
        for in_flight in [0, 1] {
            let (mut pipe, now) = pipe(80, in_flight);
            pipe.connection_busy = true;
            assert_eq!(
                next(pipe, LIMITS, now + Duration::from_secs(1)),
                Next::Wait,
                "{in_flight} in flight: the linger does not cut a batch that would wait"
            );
            pipe.connection_busy = false;
            assert_eq!(next(pipe, LIMITS, now + LIMITS.linger), Next::Send);
        }
        let (mut full, now) = pipe(1_000, 0);
        full.connection_busy = true;
        assert_eq!(next(full, LIMITS, now), Next::Send);
    }

    #[test]
    fn with_nothing_gathered_there_is_nothing_to_send() {
        let (pipe, now) = pipe(0, 0);
        assert_eq!(next(pipe, LIMITS, now), Next::Wait);
    }
}
