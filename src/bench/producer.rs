//! The producer benchmark: ours against `kafka-producer-perf-test`, for sensor
//! readings and fixed-size records, in alternating order.

use super::report::{ClientRun, Comparison};
use super::usage::Measured;
use super::worker::{Payload, WorkerSpec};

use super::*;

impl Bench<'_> {
    pub(super) async fn producer(
        &mut self,
        readings: &Readings,
    ) -> Result<Vec<Comparison>, BenchError> {
        let kinds = [
            (
                readings.label(),
                readings.mean_bytes,
                Payload::Readings(readings.path.clone()),
                self.settings.producer_records[0],
            ),
            (
                "100 B".to_string(),
                100,
                Payload::Size(100),
                self.settings.producer_records[1],
            ),
            (
                "1,000 B".to_string(),
                1_000,
                Payload::Size(1_000),
                self.settings.producer_records[2],
            ),
        ];
        // A fresh cluster's brokers are slow until the JIT has compiled their
        // hot paths (a tenth of the records was not enough: the first reported
        // run was still up to a third slower): one unreported run of each
        // side, as long as the first reported ones, comes first.
        let (_, _, payload, records) = &kinds[0];
        let warmup = *records;
        (self.say)(&format!(
            "producer warm-up: {warmup} records from each side, not reported"
        ));
        for side in order(0) {
            let topic = self.fresh_topic("warmup").await?;
            let run = self.producer_run(side, &topic, warmup, payload, 0).await;
            self.drop_topic(&topic).await;
            run?;
        }
        let mut rows = Vec::new();
        for (label, bytes, payload, records) in kinds {
            let mut row = Comparison {
                label: label.clone(),
                record_bytes: bytes,
                ours: Vec::new(),
                peer: Vec::new(),
            };
            for repeat in 0..self.settings.repeats {
                for side in order(repeat) {
                    let topic = self.fresh_topic("produce").await?;
                    let run = self
                        .producer_run(side, &topic, records, &payload, repeat)
                        .await;
                    self.drop_topic(&topic).await;
                    let run = run?;
                    (self.say)(&format!(
                        "producer {label} run {}/{}: {} {:.0} records/s, {:.2} CPU s per million records",
                        repeat + 1,
                        self.settings.repeats,
                        match side {
                            Side::Ours => "ours",
                            Side::Peer => "kafka-producer-perf-test",
                        },
                        run.records_per_sec,
                        run.cpu_secs * 1e6 / run.records.max(1) as f64
                    ));
                    match side {
                        Side::Ours => row.ours.push(run),
                        Side::Peer => row.peer.push(run),
                    }
                }
            }
            rows.push(row);
        }
        Ok(rows)
    }

    pub(super) async fn producer_run(
        &self,
        side: Side,
        topic: &str,
        records: u64,
        payload: &Payload,
        repeat: u32,
    ) -> Result<ClientRun, BenchError> {
        let target = self.target();
        match side {
            Side::Ours => {
                let (measured, broker_cpu, outcome) = self
                    .produce_with_ours(topic, records, payload, &format!("{topic}-ours-{repeat}"))
                    .await?;
                Ok(ClientRun {
                    records,
                    records_per_sec: records as f64 / outcome.elapsed_secs,
                    mib_per_sec: outcome.value_bytes as f64 / MIB / outcome.elapsed_secs,
                    cpu_secs: measured.cpu.as_secs_f64(),
                    peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
                    broker_cpu_secs: broker_cpu,
                    wall_secs: measured.wall.as_secs_f64(),
                })
            }
            Side::Peer => {
                let command = peer::producer_perf(
                    &target.distribution,
                    &target.bootstrap.join(","),
                    topic,
                    records,
                    None,
                    payload,
                    &self.settings.producer,
                );
                let (measured, broker_cpu) = self
                    .measure(
                        command,
                        "kafka-producer-perf-test",
                        &format!("{topic}-peer-{repeat}"),
                    )
                    .await?;
                let summary = peer::parse_producer_perf(&measured.stdout)?;
                if summary.records != records {
                    return Err(BenchError::Lost(format!(
                        "kafka-producer-perf-test sent {} of {records} records",
                        summary.records
                    )));
                }
                Ok(ClientRun {
                    records,
                    records_per_sec: summary.records_per_sec,
                    mib_per_sec: summary.mib_per_sec,
                    cpu_secs: measured.cpu.as_secs_f64(),
                    peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
                    broker_cpu_secs: broker_cpu,
                    wall_secs: measured.wall.as_secs_f64(),
                })
            }
        }
    }

    /// Our producer writing `records` records to `topic`, every one acknowledged.
    pub(super) async fn produce_with_ours(
        &self,
        topic: &str,
        records: u64,
        payload: &Payload,
        log_name: &str,
    ) -> Result<(Measured, Option<f64>, worker::ProduceOutcome), BenchError> {
        let command = self.worker_command(&WorkerSpec::Produce {
            bootstrap: self.target().bootstrap.clone(),
            topic: topic.to_string(),
            records,
            payload: payload.clone(),
        });
        let (measured, broker_cpu) = self.measure(command, "our producer", log_name).await?;
        let outcome: worker::ProduceOutcome = parse_worker(&measured.stdout)?;
        if outcome.acked != records {
            return Err(BenchError::Lost(format!(
                "our producer had {} of {records} records acknowledged by {topic} ({} failed)",
                outcome.acked, outcome.failed
            )));
        }
        Ok((measured, broker_cpu, outcome))
    }
}
