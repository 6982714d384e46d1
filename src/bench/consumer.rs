//! The consumer benchmark: ours against `kafka-consumer-perf-test`, reading a
//! pre-filled topic in a new group.

use super::report::{ClientRun, Comparison};
use super::worker::{Payload, WorkerSpec};

use super::*;

impl Bench<'_> {
    pub(super) async fn consumer(&mut self, readings: &Readings) -> Result<Comparison, BenchError> {
        let records = self.settings.consumer_records;
        let topic = self.fresh_topic("consume").await?;
        (self.say)(&format!(
            "consumer: filling {topic} with {records} sensor readings"
        ));
        let result = async {
            let payload = Payload::Readings(readings.path.clone());
            self.produce_with_ours(&topic, records, &payload, &format!("{topic}-fill"))
                .await?;
            // Single runs right after the fill gave ours 0.84x to 1.00x of
            // Kafka's tool, two repeats 1.48x to 1.59x: the brokers' fetch
            // path is slow until their JIT has compiled it. One unreported
            // read by each side comes first.
            if !self.settings.smoke {
                (self.say)(&format!(
                    "consumer warm-up: {records} records read by ours and kafka-consumer-perf-test, not reported"
                ));
                for side in [Side::Ours, Side::Peer] {
                    let group = format!("{topic}-warmup-{}", side.name());
                    self.consumer_run(side, &topic, &group, records).await?;
                }
            }
            let mut row = Comparison {
                label: readings.label(),
                record_bytes: readings.mean_bytes,
                ours: Vec::new(),
                peer: Vec::new(),
                others: Vec::new(),
            };
            for repeat in 0..self.settings.repeats {
                for side in order(repeat) {
                    let group = format!("{topic}-{}-{repeat}", side.name());
                    let run = self.consumer_run(side, &topic, &group, records).await?;
                    (self.say)(&format!(
                        "consumer run {}/{}: {} {:.0} records/s, {:.2} CPU s per million records",
                        repeat + 1,
                        self.settings.repeats,
                        match side {
                            Side::Ours => "ours",
                            Side::Peer => "kafka-consumer-perf-test",
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
            Ok(row)
        }
        .await;
        self.drop_topic(&topic).await;
        result
    }

    pub(super) async fn consumer_run(
        &self,
        side: Side,
        topic: &str,
        group: &str,
        records: u64,
    ) -> Result<ClientRun, BenchError> {
        let target = self.target();
        let (command, what) = match side {
            Side::Ours => (
                self.worker_command(&WorkerSpec::Consume {
                    bootstrap: target.bootstrap.clone(),
                    topic: topic.to_string(),
                    group: group.to_string(),
                    records,
                }),
                "our consumer",
            ),
            Side::Peer => {
                let mut command = peer::consumer_perf(
                    &target.distribution,
                    &target.bootstrap.join(","),
                    topic,
                    group,
                    records,
                );
                target.java_settings(&mut command, Some("--consumer.config"));
                (command, "kafka-consumer-perf-test")
            }
        };
        let (measured, broker_cpu) = self.measure(command, what, group).await?;
        let (read, records_per_sec, mib_per_sec) = match side {
            Side::Ours => {
                let outcome: worker::ConsumeOutcome = parse_worker(&measured.stdout)?;
                (
                    outcome.records,
                    outcome.records as f64 / outcome.elapsed_secs,
                    outcome.bytes as f64 / MIB / outcome.elapsed_secs,
                )
            }
            Side::Peer => {
                let summary = peer::parse_consumer_perf(&measured.stdout)?;
                (
                    summary.records,
                    summary.records_per_sec,
                    summary.mib_per_sec,
                )
            }
        };
        if read < records {
            return Err(BenchError::Lost(format!(
                "{what} read {read} of {records} records"
            )));
        }
        Ok(ClientRun {
            records: read,
            records_per_sec,
            mib_per_sec,
            cpu_secs: measured.cpu.as_secs_f64(),
            peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
            broker_cpu_secs: broker_cpu,
            wall_secs: measured.wall.as_secs_f64(),
        })
    }
}
