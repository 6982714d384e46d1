//! The per-record work of the pipeline, without Kafka: what each reading costs
//! the client besides the network.
//!
//! - encoding a reading into its JSON record value;
//! - choosing its partition (murmur2 of the key, as Kafka's Java client does);
//! - building a batch: readings into records the producer queues, then into
//!   one Produce request, as a partition writer encodes it;
//! - decoding and validating a consumed record.
//!
//! `cargo bench --bench hot_paths` measures them; `cargo test` runs each once.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use metrocloud::kafka::partitioner::partition_for_key;
use metrocloud::kafka::producer::{BatchEncoding, Compression};
use metrocloud::pipeline::sources::simulator::RecordWriter;
use metrocloud::sensor::device::DeviceType;
use metrocloud::sensor::reading::SensorReading;
use metrocloud::sensor::simulator::{Fleet, SimulatorSettings};
use metrocloud::sensor::validate::validate;

fn readings(count: usize) -> Vec<SensorReading> {
    let settings = SimulatorSettings {
        num_devices: 1_000,
        interval: Duration::from_secs(1),
        device_types: DeviceType::ALL.to_vec(),
        anomaly_probability: 0.05,
        seed: 1,
        fault_probability: 0.0,
        fault_kinds: metrocloud::sensor::fault::FaultKind::ALL.to_vec(),
    };
    let mut fleet = Fleet::new(&settings, chrono::Utc::now());
    (0..count)
        .map(|_| {
            fleet
                .next_due(Duration::MAX)
                .expect("a reading is always due")
        })
        .collect()
}

fn hot_paths(c: &mut Criterion) {
    let sample = readings(1_000);
    let one = &sample[0];

    c.bench_function("encode a reading to JSON", |b| {
        b.iter(|| black_box(one).to_json())
    });

    let keys: Vec<Vec<u8>> = sample.iter().map(|r| r.key().to_vec()).collect();
    let mut group = c.benchmark_group("partition");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("1,000 device keys over 6 partitions", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| partition_for_key(black_box(k), 6))
                .sum::<i32>()
        })
    });
    group.finish();

    let run_id: Arc<str> = Arc::from("bench-run");
    let mut group = c.benchmark_group("build a batch");
    group.throughput(Throughput::Elements(sample.len() as u64));
    let mut encoding = BatchEncoding::new("iot-sensor-data", Compression::None);
    let mut writer = RecordWriter::new(1);
    group.bench_function("1,000 readings into a Produce request", |b| {
        b.iter(|| {
            let records = sample.iter().map(|r| writer.record(r, &run_id).1);
            black_box(encoding.encode(records))
        })
    });
    group.finish();

    let values: Vec<(Vec<u8>, Vec<u8>)> = sample
        .iter()
        .map(|r| (r.key().to_vec(), r.to_json()))
        .collect();
    let valid = values
        .iter()
        .filter(|(k, v)| validate(Some(k), Some(v)).is_ok())
        .count();
    assert_eq!(
        valid,
        values.len(),
        "simulated readings all pass validation"
    );
    let mut group = c.benchmark_group("decode and validate");
    group.throughput(Throughput::Elements(values.len() as u64));
    group.bench_function("1,000 consumed records", |b| {
        b.iter_batched(
            || values.clone(),
            |values| {
                values
                    .iter()
                    .filter(|(k, v)| validate(Some(k), Some(v)).is_ok())
                    .count()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
