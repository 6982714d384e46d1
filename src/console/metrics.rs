//! `/metrics` in Prometheus' text format ([`crate::exposition`]).
//!
//! Our side of what the original design watches over JMX: the producer,
//! consumer and processing counters of the pipeline running in this process
//! (when the console runs inside `metrocloud run`), the delivery audit, what
//! the console itself read, and the cluster's state as the console last saw it.
//! Every name starts with `metrocloud_`; counters end in `_total`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::exposition::{Exposition, label};
use crate::gateway::GatewayView;
use crate::kafka::consumer::ConsumerStats;
use crate::kafka::producer::ProducerStats;
use crate::pipeline::process::ProcessingStats;
use crate::pipeline::reconcile::DeliveryAudit;

use super::cluster::ClusterSnapshot;
use super::fleet::FleetState;

/// The pipeline running in this process, when there is one.
#[derive(Clone, Default)]
pub struct PipelineHandles {
    /// The reading producer's counters.
    pub producer: Option<Arc<ProducerStats>>,
    /// The group consumer's counters.
    pub consumer: Option<Arc<ConsumerStats>>,
    /// Validation, alerts and dead letters.
    pub processing: Option<Arc<ProcessingStats>>,
    /// Acknowledged against processed readings.
    pub delivery: Option<Arc<Mutex<DeliveryAudit>>>,
    /// The fleet state the pipeline's processing feeds with every new reading
    /// (and every repeat it removed). With it, the console does not read the
    /// sensor topic a second time.
    pub fleet: Option<super::fleet::SharedFleet>,
    /// The device gateway, when it runs beside the pipeline (`METROCLOUD_GATEWAY=on`).
    pub gateway: Option<GatewayView>,
}

impl std::fmt::Debug for PipelineHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineHandles")
            .field("producer", &self.producer.is_some())
            .field("consumer", &self.consumer.is_some())
            .field("processing", &self.processing.is_some())
            .field("delivery", &self.delivery.is_some())
            .field("fleet", &self.fleet.is_some())
            .field("gateway", &self.gateway.is_some())
            .finish()
    }
}

/// The whole exposition.
pub fn render(
    pipeline: &PipelineHandles,
    fleet: &FleetState,
    cluster: Option<&ClusterSnapshot>,
    now_ms: i64,
) -> String {
    let mut out = Exposition::new();
    if let Some(producer) = &pipeline.producer {
        let p = producer.snapshot();
        out.counter(
            "producer_records_sent_total",
            "Readings handed to the producer.",
            p.sent,
        );
        out.counter(
            "producer_records_acked_total",
            "Readings Kafka acknowledged (acks=all).",
            p.acked,
        );
        out.counter(
            "producer_records_failed_total",
            "Readings whose delivery failed.",
            p.failed,
        );
        out.counter(
            "producer_retries_total",
            "Produce attempts retried.",
            p.retries,
        );
        out.counter(
            "producer_batches_acked_total",
            "Batches Kafka acknowledged.",
            p.batches,
        );
        out.gauge(
            "producer_records_pending",
            "Readings sent and not yet acknowledged or failed.",
            p.pending() as f64,
        );
    }
    if let Some(consumer) = &pipeline.consumer {
        out.counter(
            "consumer_records_processed_total",
            "Records handed to processing.",
            consumer.processed.load(Ordering::Relaxed),
        );
        out.counter(
            "consumer_commits_total",
            "Offset commits that succeeded.",
            consumer.commits.load(Ordering::Relaxed),
        );
        out.counter(
            "consumer_rejoins_total",
            "Times the member rejoined its group.",
            consumer.rejoins.load(Ordering::Relaxed),
        );
        out.gauge(
            "consumer_partitions_owned",
            "Partitions this member owns.",
            consumer.owned_partitions.load(Ordering::Relaxed) as f64,
        );
        out.gauge(
            "consumer_lag_records",
            "Records behind the high watermark, over owned partitions.",
            consumer.lag.load(Ordering::Relaxed) as f64,
        );
    }
    if let Some(stats) = &pipeline.processing {
        out.counter(
            "pipeline_readings_total",
            "Valid, new readings processed.",
            stats.readings.load(Ordering::Relaxed),
        );
        out.counter(
            "pipeline_duplicates_total",
            "Repeated readings removed.",
            stats.duplicates.load(Ordering::Relaxed),
        );
        out.counter(
            "pipeline_sequence_gaps_total",
            "Sequence numbers skipped and not seen since.",
            stats.sequence_gaps.load(Ordering::Relaxed),
        );
        out.counter(
            "pipeline_dead_letters_total",
            "Records sent to the dead-letter topic.",
            stats.dead_letters.load(Ordering::Relaxed),
        );
        out.counter(
            "pipeline_alerts_total",
            "Alerts sent.",
            stats.alerts.load(Ordering::Relaxed),
        );
        out.counter(
            "pipeline_alerts_suppressed_total",
            "Alert repeats counted on open episodes.",
            stats.alerts_suppressed.load(Ordering::Relaxed),
        );
        out.counter(
            "pipeline_delivery_failures_total",
            "Alerts or dead letters Kafka did not take.",
            stats.delivery_failures.load(Ordering::Relaxed),
        );
        let q = stats.alert_quality();
        out.metric(
            "pipeline_alert_outcomes_total",
            "counter",
            "Threshold alerts against the simulator's ground truth.",
            &[
                ("{outcome=\"true_positive\"}", q.true_positives as f64),
                ("{outcome=\"false_positive\"}", q.false_positives as f64),
                ("{outcome=\"false_negative\"}", q.false_negatives as f64),
            ],
        );
        fault_quality(&mut out, &stats.fault_quality());
    }
    if let Some(delivery) = &pipeline.delivery {
        let report = delivery.lock().unwrap_or_else(|e| e.into_inner()).report();
        out.counter(
            "audit_acked_total",
            "Readings of this run acknowledged.",
            report.acked,
        );
        out.counter(
            "audit_processed_total",
            "Distinct readings of this run processed.",
            report.consumed,
        );
        out.gauge(
            "audit_acked_unprocessed",
            "Acknowledged readings not processed yet (lost if still so at the end).",
            report.lost as f64,
        );
        out.counter(
            "audit_processed_twice_total",
            "Readings processed more than once (extra times).",
            report.duplicates,
        );
    }

    let watched = fleet.counters();
    let audit = fleet.audit();
    out.counter(
        "console_records_read_total",
        "Sensor-topic records the console read.",
        watched.records,
    );
    out.counter(
        "console_invalid_records_total",
        "Sensor-topic records that failed validation.",
        watched.invalid,
    );
    out.gauge(
        "fleet_devices",
        "Devices seen.",
        fleet.device_count() as f64,
    );
    out.gauge(
        "fleet_sequence_gaps",
        "Sequence numbers skipped and not seen since, over all devices.",
        audit.missing as f64,
    );
    out.counter(
        "fleet_duplicates_total",
        "Repeated readings seen on the sensor topic.",
        audit.duplicates,
    );
    out.counter(
        "fleet_out_of_order_total",
        "Readings seen after a later one of the same device.",
        audit.out_of_order,
    );
    out.gauge(
        "alerts_last_hour",
        "Alerts written in the last hour.",
        fleet.alerts_last_hour(now_ms) as f64,
    );
    out.gauge(
        "dead_letters_last_hour",
        "Dead letters written in the last hour.",
        fleet.dead_letters_last_hour(now_ms) as f64,
    );
    let reasons: Vec<(String, f64)> = fleet
        .dead_letter_reasons()
        .iter()
        .map(|(reason, n)| (format!("{{reason=\"{}\"}}", label(reason)), *n as f64))
        .collect();
    let reasons: Vec<(&str, f64)> = reasons.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    out.metric(
        "dead_letters_read_total",
        "counter",
        "Dead letters the console read, by reason.",
        &reasons,
    );

    if let Some(cluster) = cluster {
        out.gauge(
            "kafka_reachable",
            "1 when a broker answered the console's last look.",
            f64::from(u8::from(cluster.reachable)),
        );
        out.gauge(
            "kafka_brokers_up",
            "Brokers listed in the metadata.",
            cluster.brokers_up() as f64,
        );
        out.gauge(
            "kafka_brokers_known",
            "Brokers seen since the console started.",
            cluster.brokers.len() as f64,
        );
        out.gauge(
            "kafka_partitions_under_replicated",
            "Partitions with fewer in-sync replicas than replicas.",
            cluster.under_replicated() as f64,
        );
        out.gauge(
            "kafka_partitions_offline",
            "Partitions without a leader.",
            cluster.offline() as f64,
        );
        let lags: Vec<(String, f64)> = cluster
            .groups
            .iter()
            .map(|g| {
                (
                    format!("{{group=\"{}\"}}", label(&g.id)),
                    g.total_lag as f64,
                )
            })
            .collect();
        let lags: Vec<(&str, f64)> = lags.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        out.metric(
            "kafka_group_lag_records",
            "gauge",
            "Records written and not committed, per group.",
            &lags,
        );
    }
    if let Some(gateway) = &pipeline.gateway {
        gateway.metrics(&mut out);
    }
    out.into_text()
}

/// The fault detector's alerts against the simulator's fault episodes, per kind.
fn fault_quality(out: &mut Exposition, q: &crate::sensor::detect::quality::FaultQuality) {
    let per_kind = |value: &dyn Fn(&crate::sensor::detect::quality::KindQuality) -> f64| {
        q.kinds()
            .iter()
            .map(|k| (format!("{{kind=\"{}\"}}", k.kind), value(k)))
            .collect::<Vec<_>>()
    };
    let series =
        |name: &str, kind: &str, help: &str, values: Vec<(String, f64)>, out: &mut Exposition| {
            let labelled: Vec<(&str, f64)> = values.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            out.metric(name, kind, help, &labelled);
        };
    series(
        "pipeline_fault_episodes_total",
        "counter",
        "Sensor fault episodes in the readings' ground truth, by kind.",
        per_kind(&|k| k.episodes as f64),
        out,
    );
    series(
        "pipeline_fault_episodes_found_total",
        "counter",
        "Of those, the episodes the fault detector raised an alert for.",
        per_kind(&|k| k.found as f64),
        out,
    );
    series(
        "pipeline_fault_alerts_total",
        "counter",
        "The fault detector's alerts, by the kind they name.",
        per_kind(&|k| k.alerts as f64),
        out,
    );
    series(
        "pipeline_fault_precision",
        "gauge",
        "Share of the detector's alerts naming the kind that fell inside an episode.",
        per_kind(&|k| k.precision()),
        out,
    );
    series(
        "pipeline_fault_recall",
        "gauge",
        "Share of the kind's episodes the detector found.",
        per_kind(&|k| k.recall()),
        out,
    );
    series(
        "pipeline_fault_f1",
        "gauge",
        "Harmonic mean of the kind's precision and recall.",
        per_kind(&|k| k.f1()),
        out,
    );
    series(
        "pipeline_fault_median_delay_readings",
        "gauge",
        "Median readings from an episode's start to its first alert (absent until one is found).",
        q.kinds()
            .iter()
            .filter_map(|k| {
                k.median_delay()
                    .map(|d| (format!("{{kind=\"{}\"}}", k.kind), d as f64))
            })
            .collect(),
        out,
    );
    out.counter(
        "pipeline_fault_false_alarms_total",
        "The detector's alerts outside every episode.",
        q.false_alarms,
    );
}
