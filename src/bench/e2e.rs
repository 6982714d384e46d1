//! The end-to-end benchmark: latency from the produce call to the validated
//! reading at fixed offered rates, beside `kafka-e2e-latency`.

use std::path::Path;

use super::report::{LatencyRun, LatencySection, PeerLatency};
use super::usage::WARM_UP_ROUNDS;
use super::worker::{Payload, WorkerSpec};

use super::*;

impl Bench<'_> {
    pub(super) async fn end_to_end(
        &mut self,
        readings: &Readings,
    ) -> Result<LatencySection, BenchError> {
        let mut runs: Vec<LatencyRun> = Vec::new();
        let mut rates = self.settings.e2e_rates.clone();
        rates.sort_unstable();
        let mut highest: Option<u32> = None;
        let mut lowest_failed: Option<u32> = None;
        // The first run on a cluster also pays for the group offsets topic
        // (50 partitions made when the first group commits) and for the
        // brokers' JIT: a run at 1,000/s went from a 21 ms median to 1 ms
        // once that was behind it. Unreported runs of each side come first
        // (not in a smoke run, which measures nothing), until the brokers'
        // compilers are quiet: with a single repeat ours goes first at each
        // rate, and would pay for the compiling alone.
        if let Some(&first) = rates.first().filter(|_| !self.settings.smoke) {
            let brokers = self.target().brokers.clone();
            for round in 1..=WARM_UP_ROUNDS {
                let mark = brokers.mark();
                self.latency_run(first, &readings.path).await?;
                self.peer_ack_latency(first, &readings.path).await?;
                let compiling = brokers.since(mark);
                (self.say)(&format!(
                    "end-to-end warm-up {round}: ours and Kafka's producer at {first} records/s, not reported{}",
                    compiling.map_or(String::new(), |c| format!(": {}", c.describe()))
                ));
                if compiling.is_none_or(|c| c.quiet()) {
                    break;
                }
            }
        }
        for rate in rates {
            // Each side runs `repeats` times, taking turns at going first.
            for repeat in 0..self.settings.repeats {
                let (mut run, peer) = if repeat % 2 == 0 {
                    let run = self.latency_run(rate, &readings.path).await?;
                    (run, self.peer_ack_latency(rate, &readings.path).await?)
                } else {
                    let peer = self.peer_ack_latency(rate, &readings.path).await?;
                    (self.latency_run(rate, &readings.path).await?, peer)
                };
                run.peer_ack_ms = Some(peer);
                if run.sustained {
                    highest = highest.max(Some(rate));
                } else {
                    lowest_failed = Some(lowest_failed.map_or(rate, |f| f.min(rate)));
                }
                runs.push(run);
            }
        }
        // Then the highest sustained rate: climb while every rate holds,
        // then narrow the gap between the last that held and the first that did not.
        let step = |rate: u32| ((rate as f64 * 1.5 / 1000.0).round() as u32) * 1000;
        if lowest_failed.is_none() {
            while let Some(top) = highest {
                let next = step(top);
                if next > self.settings.e2e_max_rate || next <= top {
                    break;
                }
                let run = self.latency_run(next, &readings.path).await?;
                let held = run.sustained;
                runs.push(run);
                if held {
                    highest = Some(next);
                } else {
                    lowest_failed = Some(next);
                    break;
                }
            }
        }
        for _ in 0..2 {
            let (Some(failed), low) = (lowest_failed, highest.unwrap_or(0)) else {
                break;
            };
            let middle = ((low + failed) / 2 / 1000) * 1000;
            if middle <= low || middle >= failed {
                break;
            }
            let run = self.latency_run(middle, &readings.path).await?;
            if run.sustained {
                highest = Some(middle);
            } else {
                lowest_failed = Some(middle);
            }
            runs.push(run);
        }
        let peer = self.peer_latency(readings.mean_bytes).await?;
        Ok(LatencySection {
            record_bytes: readings.mean_bytes,
            ours: runs,
            highest_sustained: highest,
            peer: Some(peer),
        })
    }

    pub(super) async fn latency_run(
        &mut self,
        rate: u32,
        readings: &Path,
    ) -> Result<LatencyRun, BenchError> {
        let topic = self.fresh_topic("e2e").await?;
        self.latency_on(&topic, rate, readings).await
    }

    /// Our end-to-end run offering `rate` readings/s to `topic`, which it deletes after.
    pub(super) async fn latency_on(
        &mut self,
        topic: &str,
        rate: u32,
        readings: &Path,
    ) -> Result<LatencyRun, BenchError> {
        let topic = topic.to_string();
        let command = self.worker_command(&WorkerSpec::EndToEnd {
            bootstrap: self.target().bootstrap.clone(),
            topic: topic.clone(),
            group: format!("{topic}-group"),
            rate,
            seconds: self.settings.e2e_seconds,
            readings: readings.to_path_buf(),
        });
        let measured = self.measure(command, "our end-to-end run", &topic).await;
        self.drop_topic(&topic).await;
        let (measured, _) = measured?;
        let outcome: worker::EndToEndOutcome = parse_worker(&measured.stdout)?;
        let ms = |us: u64| us as f64 / 1000.0;
        let run = LatencyRun {
            rate,
            achieved_rate: outcome.sent as f64 / self.settings.e2e_seconds,
            p50_ms: ms(outcome.p50_us),
            p99_ms: ms(outcome.p99_us),
            p999_ms: ms(outcome.p999_us),
            max_ms: ms(outcome.max_us),
            ack_p50_ms: ms(outcome.ack_p50_us),
            ack_p99_ms: ms(outcome.ack_p99_us),
            peer_ack_ms: None,
            behind_at_end: outcome.behind_at_end,
            lag_at_end: outcome.lag_at_end,
            sustained: outcome.sustained(),
            processed: outcome.processed,
            cpu_secs: measured.cpu.as_secs_f64(),
            peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
        };
        (self.say)(&format!(
            "e2e at {rate} records/s: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} (behind {} records, lag {} at the end)",
            run.p50_ms,
            run.p99_ms,
            run.p999_ms,
            run.max_ms,
            if run.sustained {
                "kept up"
            } else {
                "did not keep up"
            },
            outcome.behind_at_end,
            outcome.lag_at_end
        ));
        Ok(run)
    }

    /// `kafka-producer-perf-test` offering `rate` records/s for as long as ours
    /// did: its median and 99th percentile time from send to acknowledgement.
    pub(super) async fn peer_ack_latency(
        &mut self,
        rate: u32,
        readings: &Path,
    ) -> Result<(f64, f64), BenchError> {
        let topic = self.fresh_topic("ack-peer").await?;
        let records = (f64::from(rate) * self.settings.e2e_seconds) as u64;
        let target = self.target();
        let mut command = peer::producer_perf(
            &target.distribution,
            &target.bootstrap.join(","),
            &topic,
            records.max(1),
            Some(rate),
            &Payload::Readings(readings.to_path_buf()),
            &self.settings.producer,
        );
        target.java_settings(&mut command, Some("--producer.config"));
        let measured = self
            .measure(command, "kafka-producer-perf-test", &topic)
            .await;
        self.drop_topic(&topic).await;
        let summary = peer::parse_producer_perf(&measured?.0.stdout)?;
        (self.say)(&format!(
            "kafka-producer-perf-test at {rate} records/s: send→ack p50 {} ms, p99 {} ms",
            summary.p50_latency_ms, summary.p99_latency_ms
        ));
        Ok((summary.p50_latency_ms, summary.p99_latency_ms))
    }

    pub(super) async fn peer_latency(&mut self, size: usize) -> Result<PeerLatency, BenchError> {
        let topic = self.fresh_topic("e2e-peer").await?;
        let records = self.settings.e2e_peer_records;
        let target = self.target();
        let mut command = peer::e2e_latency(
            &target.distribution,
            &target.bootstrap.join(","),
            &topic,
            records,
            size,
        );
        target.java_settings(&mut command, None);
        let measured = self.measure(command, "kafka-e2e-latency", &topic).await;
        self.drop_topic(&topic).await;
        let summary = peer::parse_e2e_latency(&measured?.0.stdout)?;
        (self.say)(&format!(
            "kafka-e2e-latency, {records} records one at a time: p50 {} ms, p99 {} ms, p99.9 {} ms",
            summary.p50_ms, summary.p99_ms, summary.p999_ms
        ));
        Ok(PeerLatency {
            records,
            avg_ms: summary.avg_ms,
            p50_ms: summary.p50_ms,
            p99_ms: summary.p99_ms,
            p999_ms: summary.p999_ms,
        })
    }
}
