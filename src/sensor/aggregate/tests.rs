use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::sensor::reading::tests::example;

const GRACE_MS: i64 = 10_000;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A reading of `device` taken `ms` milliseconds after 10:00.
fn reading(device: &str, ms: i64, value: f64) -> SensorReading {
    SensorReading {
        device_id: device.to_string(),
        timestamp: start() + TimeDelta::milliseconds(ms),
        value,
        ..example()
    }
}

/// Feeds `readings` from offset 0 on; returns every aggregate written.
fn aggregate_all(
    aggregator: &mut PartitionAggregator,
    readings: &[SensorReading],
) -> Vec<MinuteAggregate> {
    readings
        .iter()
        .enumerate()
        .flat_map(|(offset, reading)| aggregator.add(reading, offset as i64))
        .collect()
}

#[test]
fn a_minute_is_written_once_a_reading_is_past_its_end_and_the_grace() {
    let mut aggregator = PartitionAggregator::new(3, GRACE_MS);
    let mut anomalous = reading("a", 20_000, 40.0);
    anomalous.is_anomaly = true;
    let readings = [
        reading("a", 1_000, 20.0),
        anomalous,
        reading("b", 30_000, 5.0),
        reading("a", 59_999, 30.0),
        // The next minute, but within the grace: nothing closes yet.
        reading("a", 69_999, 31.0),
    ];
    assert!(aggregate_all(&mut aggregator, &readings).is_empty());
    assert_eq!(aggregator.open_minutes(), 3);
    assert_eq!(aggregator.low_water(), Some(0));

    let closed = aggregator.add(&reading("b", 70_000, 6.0), 5);
    assert_eq!(
        closed.len(),
        2,
        "both devices' first minute closes: {closed:?}"
    );
    let a = &closed[0];
    assert_eq!((a.device_id.as_str(), a.minute), ("a", start()));
    assert_eq!(
        (a.count, a.min, a.max, a.last, a.anomalies),
        (3, 20.0, 40.0, 30.0, 1)
    );
    assert_eq!(a.mean, 30.0);
    assert_eq!(closed[1].device_id, "b");
    assert_eq!(closed[1].count, 1);
    assert_eq!(
        a.source,
        AggregateSource {
            partition: 3,
            offset: 5,
            emission: 0,
            watermark_before_ms: start().timestamp_millis() + 69_999,
            watermark_ms: start().timestamp_millis() + 70_000,
        }
    );
    assert_eq!(closed[1].source.emission, 1);
    assert_eq!(
        aggregator.low_water(),
        Some(4),
        "the oldest open minute starts at offset 4"
    );
}

#[test]
fn the_last_value_is_the_latest_in_event_time_not_in_arrival() {
    let mut aggregator = PartitionAggregator::new(0, GRACE_MS);
    let readings = [
        reading("a", 50_000, 1.0),
        reading("a", 10_000, 2.0),
        reading("a", 200_000, 3.0),
    ];
    let closed = aggregate_all(&mut aggregator, &readings);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].last, 1.0);
    assert_eq!(closed[0].count, 2);
}

#[test]
fn a_reading_later_than_the_grace_is_counted_as_late_and_left_out() {
    let mut aggregator = PartitionAggregator::new(0, GRACE_MS);
    let readings = [
        reading("a", 1_000, 1.0),
        reading("b", 75_000, 2.0),
        // Minute 10:00 closed at 10:01:10; this one is too late for it.
        reading("a", 2_000, 9.0),
        // Within the grace of minute 10:01: counted.
        reading("a", 61_000, 4.0),
    ];
    let closed = aggregate_all(&mut aggregator, &readings);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].count, 1);
    assert_eq!(aggregator.late(), 1);
    let closed = aggregator.add(&reading("b", 200_000, 0.0), 4);
    let a = closed.iter().find(|m| m.device_id == "a").unwrap();
    assert_eq!((a.count, a.last), (1, 4.0));
}

#[test]
fn aggregates_survive_the_json_of_their_record() {
    let mut aggregator = PartitionAggregator::new(0, GRACE_MS);
    let closed = aggregate_all(
        &mut aggregator,
        &[reading("a", 1_000, 1.5), reading("a", 90_000, 2.0)],
    );
    let json = closed[0].to_json();
    assert!(
        json.contains("\"minute\":\"2026-12-02T10:00:00Z\""),
        "{json}"
    );
    let back: MinuteAggregate = serde_json::from_str(&json).unwrap();
    assert_eq!(back, closed[0]);
}

/// Readings of four devices over six minutes, arriving a little out of order.
fn a_stream() -> Vec<SensorReading> {
    let mut readings = Vec::new();
    for step in 0..72 {
        for (d, device) in ["a", "b", "c", "d"].iter().enumerate() {
            // Every fourth reading of a device arrives up to 9 s behind the others.
            let jitter = if (step + d) % 4 == 0 {
                -9_000 + d as i64 * 700
            } else {
                0
            };
            let value = ((step * 7 + d * 3) % 11) as f64 + 0.25;
            readings.push(reading(device, step as i64 * 5_000 + jitter, value));
        }
    }
    readings
}

/// A crash: the owner processed records `0..crashed`, committed at record
/// `committed_at` (its aggregates up to there acknowledged), and `durable` of
/// its aggregates reached Kafka. A new owner resumes; what both wrote must be
/// what one owner with no crash writes.
fn written_across_a_crash(
    readings: &[SensorReading],
    committed_at: usize,
    crashed: usize,
    durable_extra: usize,
) -> Option<Vec<MinuteAggregate>> {
    let mut first = PartitionAggregator::new(0, GRACE_MS);
    let mut written = Vec::new();
    let mut commit = 0;
    let mut acknowledged_at_commit = 0;
    for (offset, reading) in readings.iter().enumerate().take(crashed) {
        if offset == committed_at {
            commit = first.low_water().unwrap_or(offset as i64);
            acknowledged_at_commit = written.len();
        }
        written.extend(first.add(reading, offset as i64));
    }
    if committed_at >= crashed {
        return None;
    }
    let durable = acknowledged_at_commit + durable_extra;
    if durable > written.len() {
        return None;
    }
    written.truncate(durable);
    let mut second = match written.last() {
        Some(last) => PartitionAggregator::resuming(0, GRACE_MS, commit, last.source.into()),
        None => PartitionAggregator::new(0, GRACE_MS),
    };
    for (offset, reading) in readings.iter().enumerate().skip(commit as usize) {
        written.extend(second.add(reading, offset as i64));
    }
    Some(written)
}

#[test]
fn after_a_crash_at_any_point_every_minute_is_written_once_with_the_same_contents() {
    let readings = a_stream();
    let mut whole = PartitionAggregator::new(0, GRACE_MS);
    let expected = aggregate_all(&mut whole, &readings);
    assert!(
        expected.len() >= 16,
        "four devices, at least four closed minutes each"
    );
    let mut crashes = 0;
    for crashed in (1..readings.len()).step_by(7) {
        for committed_at in (0..crashed).step_by(11) {
            for durable_extra in [0, 1, 2, 5, 1_000] {
                let Some(written) =
                    written_across_a_crash(&readings, committed_at, crashed, durable_extra)
                else {
                    continue;
                };
                crashes += 1;
                assert_eq!(
                    written, expected,
                    "crash after record {crashed}, commit at {committed_at}, {durable_extra} aggregates acknowledged past the commit"
                );
            }
        }
    }
    assert!(crashes > 300, "{crashes} crashes tried");
}

#[test]
fn the_commit_never_passes_the_first_record_of_an_open_minute() {
    let readings = a_stream();
    let mut aggregator = PartitionAggregator::new(0, GRACE_MS);
    let mut first_record: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for (offset, reading) in readings.iter().enumerate() {
        let minute = reading.timestamp.timestamp_millis().div_euclid(MINUTE_MS);
        first_record
            .entry((minute, reading.device_id.clone()))
            .or_insert(offset as i64);
        for closed in aggregator.add(reading, offset as i64) {
            first_record.remove(&(
                closed.minute.timestamp_millis() / MINUTE_MS,
                closed.device_id,
            ));
        }
        let oldest_open = first_record.values().min().copied();
        assert_eq!(aggregator.low_water(), oldest_open, "after record {offset}");
    }
}

#[test]
fn units_of_closed_minutes_are_let_go_and_each_aggregate_keeps_its_own() {
    let mut aggregator = PartitionAggregator::new(0, GRACE_MS);
    // A device a minute, each naming a unit of its own: 1,000 units in all.
    let readings: Vec<SensorReading> = (0..1_000i64)
        .map(|minute| SensorReading {
            unit: format!("unit-{minute}"),
            ..reading("a", minute * MINUTE_MS, 1.0)
        })
        .collect();
    let written = aggregate_all(&mut aggregator, &readings);
    assert!(written.len() >= 990, "{} aggregates", written.len());
    for aggregate in &written {
        let minute = (aggregate.minute - start()).num_minutes();
        assert_eq!(aggregate.unit, format!("unit-{minute}"));
    }
    assert!(
        aggregator.units.len() <= UNITS_KEPT + 1,
        "{} units held for {} open minutes",
        aggregator.units.len(),
        aggregator.open_minutes()
    );
}
