//! What the gateway shows of itself: the status line, `/metrics`, and the
//! console's overview when it runs inside `metrocloud run`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::buffer::Buffer;
use super::intake::GatewayStats;
use crate::exposition::Exposition;

/// A running gateway's counters and buffer, to look at.
#[derive(Clone)]
pub struct GatewayView {
    stats: Arc<GatewayStats>,
    buffer: Arc<Buffer>,
}

/// The counters and the buffer at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GatewaySnapshot {
    /// Readings taken into the buffer.
    pub accepted: u64,
    /// Messages refused (not a reading, or not the sender's to send).
    pub refused: u64,
    /// Connections and requests refused for their credentials.
    pub unauthorized: u64,
    /// Times a device was pushed back because the buffer was full.
    pub pushed_back: u64,
    /// Readings Kafka acknowledged.
    pub forwarded: u64,
    /// Dead letters Kafka acknowledged.
    pub dead_letters: u64,
    /// Dead letters not kept because the buffer was full.
    pub dead_letters_dropped: u64,
    /// Records sent again after Kafka did not acknowledge them (or one before them).
    pub resent: u64,
    /// Records in the buffer that Kafka has not acknowledged.
    pub buffered_records: u64,
    /// The buffer's bytes on disk.
    pub buffered_bytes: u64,
    /// How long the oldest record in flight to Kafka has waited, seconds (0 when none).
    pub oldest_age_seconds: f64,
}

impl GatewayView {
    /// A view of these counters and this buffer.
    pub fn new(stats: Arc<GatewayStats>, buffer: Arc<Buffer>) -> Self {
        GatewayView { stats, buffer }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<GatewayStats> {
        &self.stats
    }

    /// Counters and buffer now.
    pub fn snapshot(&self) -> GatewaySnapshot {
        let s = &self.stats;
        let read = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let (buffered_records, buffered_bytes) = self.buffer.depth();
        let oldest = read(&s.oldest_waiting_ms);
        let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
        GatewaySnapshot {
            accepted: read(&s.accepted),
            refused: read(&s.refused),
            unauthorized: read(&s.unauthorized),
            pushed_back: read(&s.pushed_back),
            forwarded: read(&s.forwarded),
            dead_letters: read(&s.dead_letters),
            dead_letters_dropped: read(&s.dead_letters_dropped),
            resent: read(&s.resent),
            buffered_records,
            buffered_bytes,
            oldest_age_seconds: if oldest == 0 || buffered_records == 0 {
                0.0
            } else {
                now.saturating_sub(oldest) as f64 / 1000.0
            },
        }
    }

    /// The gateway's metrics, written into `out`.
    pub fn metrics(&self, out: &mut Exposition) {
        let s = self.snapshot();
        let counters = [
            (
                "gateway_readings_accepted_total",
                "Readings taken into the disk buffer and acknowledged to their devices.",
                s.accepted,
            ),
            (
                "gateway_messages_refused_total",
                "Messages refused: not a valid reading, or not the sender's to send.",
                s.refused,
            ),
            (
                "gateway_unauthorized_total",
                "Connections and requests refused for their credentials.",
                s.unauthorized,
            ),
            (
                "gateway_pushed_back_total",
                "Times a device was pushed back because the buffer was full.",
                s.pushed_back,
            ),
            (
                "gateway_readings_forwarded_total",
                "Readings Kafka acknowledged.",
                s.forwarded,
            ),
            (
                "gateway_dead_letters_total",
                "Dead letters of refused messages Kafka acknowledged.",
                s.dead_letters,
            ),
            (
                "gateway_dead_letters_dropped_total",
                "Dead letters not kept because the buffer was full.",
                s.dead_letters_dropped,
            ),
            (
                "gateway_records_resent_total",
                "Records sent to Kafka again after a delivery failed.",
                s.resent,
            ),
        ];
        for (name, help, value) in counters {
            out.counter(name, help, value);
        }
        out.gauge(
            "gateway_buffered_records",
            "Records in the disk buffer Kafka has not acknowledged.",
            s.buffered_records as f64,
        );
        out.gauge(
            "gateway_buffered_bytes",
            "Bytes of the disk buffer's segments.",
            s.buffered_bytes as f64,
        );
        out.gauge(
            "gateway_oldest_buffered_age_seconds",
            "How long the oldest record in flight to Kafka has waited.",
            s.oldest_age_seconds,
        );
        let commits = self.buffer.commit_times().snapshot();
        out.histogram(
            super::timings::COMMIT_METRIC,
            "How long each group commit took to write out and fsync the buffer's appends.",
            &commits.buckets,
            commits.count,
            commits.sum_seconds,
        );
        let acks = self.stats.ack_times.snapshot();
        out.histogram(
            super::timings::ACK_METRIC,
            "How long MQTT readings waited inside the gateway, from the PUBLISH read to its PUBACK written.",
            &acks.buckets,
            acks.count,
            acks.sum_seconds,
        );
    }

    /// The status line: counts, forwarded and refused per second since the
    /// last line (`previous`: that line's snapshot), and the buffer.
    pub fn status_line(
        &self,
        previous: &GatewaySnapshot,
        elapsed_seconds: f64,
    ) -> (String, GatewaySnapshot) {
        let s = self.snapshot();
        let per_second =
            |now: u64, before: u64| now.saturating_sub(before) as f64 / elapsed_seconds.max(0.001);
        let text = format!(
            "gateway: accepted {} | refused {} ({:.0}/s) | forwarded {} ({:.0}/s) | buffered {} records, {:.1} MiB, oldest {:.1} s | pushed back {} | resent {}",
            s.accepted,
            s.refused,
            per_second(s.refused, previous.refused),
            s.forwarded,
            per_second(s.forwarded, previous.forwarded),
            s.buffered_records,
            s.buffered_bytes as f64 / (1024.0 * 1024.0),
            s.oldest_age_seconds,
            s.pushed_back,
            s.resent,
        );
        (text, s)
    }
}

impl Default for GatewaySnapshot {
    fn default() -> Self {
        GatewaySnapshot {
            accepted: 0,
            refused: 0,
            unauthorized: 0,
            pushed_back: 0,
            forwarded: 0,
            dead_letters: 0,
            dead_letters_dropped: 0,
            resent: 0,
            buffered_records: 0,
            buffered_bytes: 0,
            oldest_age_seconds: 0.0,
        }
    }
}
