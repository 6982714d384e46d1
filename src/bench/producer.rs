//! The producer benchmark: ours against `kafka-producer-perf-test`, and
//! beside them librdkafka (`kcat`) and any other build of ours, for sensor
//! readings and fixed-size records, in an order that turns from one repeat
//! to the next.

use std::path::PathBuf;

use super::report::{ClientRun, Comparison, OtherClient};
use super::usage::Measured;
use super::worker::{Payload, WorkerSpec};

use super::*;

/// A producer the benchmark runs.
#[derive(Debug, Clone, PartialEq)]
enum Client {
    /// A build of ours, through its bench worker.
    Ours(PathBuf),
    /// Another build of ours, as an extra row.
    OtherBuild(PathBuf),
    /// `kafka-producer-perf-test`, Kafka's Java producer.
    Java,
    /// `kcat -P`, librdkafka's producer.
    Kcat(PathBuf),
}

impl Client {
    fn name(&self) -> String {
        match self {
            Client::Ours(binary) => format!("ours, {} build", build_label(binary)),
            Client::OtherBuild(binary) => {
                format!(
                    "ours, {} build at {}",
                    build_label(binary),
                    binary.display()
                )
            }
            Client::Java => "kafka-producer-perf-test".to_string(),
            Client::Kcat(_) => "kcat (librdkafka)".to_string(),
        }
    }
}

/// The clients in the order of repeat `repeat`: the list turned left by
/// `repeat` places, so each client goes first in turn.
fn turn(clients: &[Client], repeat: u32) -> Vec<Client> {
    let mut turned = clients.to_vec();
    if !turned.is_empty() {
        turned.rotate_left(repeat as usize % clients.len());
    }
    turned
}

impl Bench<'_> {
    pub(super) async fn producer(
        &mut self,
        readings: &Readings,
    ) -> Result<Vec<Comparison>, BenchError> {
        let ours = Client::Ours(self.settings.binary.clone());
        let mut clients = vec![ours.clone(), Client::Java];
        clients.extend(self.settings.kcat.clone().map(Client::Kcat));
        clients.extend(
            self.settings
                .other_builds
                .iter()
                .cloned()
                .map(Client::OtherBuild),
        );
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
        // run was still up to a third slower): one unreported run of ours and
        // Java's, as long as the first reported ones, comes first.
        let (_, _, payload, records) = &kinds[0];
        let warmup = *records;
        (self.say)(&format!(
            "producer warm-up: {warmup} records from ours and Kafka's, not reported"
        ));
        for client in [ours.clone(), Client::Java] {
            let topic = self.fresh_topic("warmup").await?;
            let run = self.producer_run(&client, &topic, warmup, payload, 0).await;
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
                others: Vec::new(),
            };
            for repeat in 0..self.settings.repeats {
                for client in turn(&clients, repeat) {
                    let topic = self.fresh_topic("produce").await?;
                    let run = self
                        .producer_run(&client, &topic, records, &payload, repeat)
                        .await;
                    self.drop_topic(&topic).await;
                    let run = run?;
                    (self.say)(&format!(
                        "producer {label} run {}/{}: {} {:.0} records/s, {:.2} CPU s per million records",
                        repeat + 1,
                        self.settings.repeats,
                        client.name(),
                        run.records_per_sec,
                        run.cpu_secs * 1e6 / run.records.max(1) as f64
                    ));
                    if client == ours {
                        row.ours.push(run);
                    } else if client == Client::Java {
                        row.peer.push(run);
                    } else {
                        let name = client.name();
                        match row.others.iter_mut().find(|o| o.name == name) {
                            Some(other) => other.runs.push(run),
                            None => row.others.push(OtherClient {
                                name,
                                runs: vec![run],
                            }),
                        }
                    }
                }
            }
            rows.push(row);
        }
        Ok(rows)
    }

    async fn producer_run(
        &self,
        client: &Client,
        topic: &str,
        records: u64,
        payload: &Payload,
        repeat: u32,
    ) -> Result<ClientRun, BenchError> {
        let target = self.target();
        let log_name = format!("{topic}-{repeat}");
        match client {
            Client::Ours(binary) | Client::OtherBuild(binary) => {
                let (measured, broker_cpu, outcome) = self
                    .produce_with(binary, topic, records, payload, &format!("{log_name}-ours"))
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
            Client::Java => {
                let mut command = peer::producer_perf(
                    &target.distribution,
                    &target.bootstrap.join(","),
                    topic,
                    records,
                    None,
                    payload,
                    &self.settings.producer,
                );
                target.java_settings(&mut command, Some("--producer.config"));
                let (measured, broker_cpu) = self
                    .measure(
                        command,
                        "kafka-producer-perf-test",
                        &format!("{log_name}-java"),
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
            Client::Kcat(kcat) => {
                let input = self.settings.work_dir.join(format!("{topic}.kcat-input"));
                kcat::write_input(&input, payload, records)?;
                let value_bytes = std::fs::metadata(&input)
                    .map_err(|e| BenchError::io(&input, e))?
                    .len()
                    .saturating_sub(records);
                let mut command = kcat::producer(
                    kcat,
                    &target.bootstrap.join(","),
                    topic,
                    &input,
                    &self.settings.producer,
                );
                target.kcat_settings(&mut command);
                let measured = self
                    .measure(command, "kcat", &format!("{log_name}-kcat"))
                    .await;
                let _ = std::fs::remove_file(&input);
                let (measured, broker_cpu) = measured?;
                let stored = self.stored_records(topic).await?;
                if stored != records {
                    return Err(BenchError::Lost(format!(
                        "kcat stored {stored} of {records} records in {topic}"
                    )));
                }
                let seconds = measured.wall.as_secs_f64();
                Ok(ClientRun {
                    records,
                    records_per_sec: records as f64 / seconds,
                    mib_per_sec: value_bytes as f64 / MIB / seconds,
                    cpu_secs: measured.cpu.as_secs_f64(),
                    peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
                    broker_cpu_secs: broker_cpu,
                    wall_secs: seconds,
                })
            }
        }
    }

    /// Records in `topic`: the sum of its partitions' end offsets.
    async fn stored_records(&self, topic: &str) -> Result<u64, BenchError> {
        let admin = &self.target().admin;
        let cluster = |e: crate::kafka::admin::AdminError| {
            BenchError::Cluster(format!("cannot count the records in {topic}: {e}"))
        };
        let metadata = admin.metadata(Some(&[topic])).await.map_err(cluster)?;
        let ends = admin
            .list_offsets(&metadata, topic, crate::kafka::admin::OffsetAt::Latest)
            .await
            .map_err(cluster)?;
        Ok(ends.values().map(|&end| end.max(0) as u64).sum())
    }

    /// Our producer writing `records` records to `topic`, every one acknowledged.
    pub(super) async fn produce_with_ours(
        &self,
        topic: &str,
        records: u64,
        payload: &Payload,
        log_name: &str,
    ) -> Result<(Measured, Option<f64>, worker::ProduceOutcome), BenchError> {
        self.produce_with(&self.settings.binary, topic, records, payload, log_name)
            .await
    }

    /// The build at `binary` writing `records` records to `topic`, every one acknowledged.
    async fn produce_with(
        &self,
        binary: &Path,
        topic: &str,
        records: u64,
        payload: &Payload,
        log_name: &str,
    ) -> Result<(Measured, Option<f64>, worker::ProduceOutcome), BenchError> {
        let command = self.worker_command_of(
            binary,
            &WorkerSpec::Produce {
                bootstrap: self.target().bootstrap.clone(),
                topic: topic.to_string(),
                records,
                payload: payload.clone(),
            },
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_goes_first_in_turn() {
        let clients = [
            Client::Ours(PathBuf::from("a")),
            Client::Java,
            Client::Kcat(PathBuf::from("k")),
        ];
        let firsts: Vec<Client> = (0..3).map(|r| turn(&clients, r)[0].clone()).collect();
        assert_eq!(firsts, clients);
        assert_eq!(turn(&clients, 3), clients);
    }
}
