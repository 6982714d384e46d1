//! The simulated fleet: timing, values, anomalies and the state it keeps.

use super::*;
use crate::sensor::fault::FaultKind;

fn settings(num_devices: u32, anomaly_probability: f64, seed: u64) -> SimulatorSettings {
    SimulatorSettings {
        num_devices,
        interval: Duration::from_secs(1),
        device_types: DeviceType::ALL.to_vec(),
        anomaly_probability,
        seed,
        fault_probability: 0.0,
        fault_kinds: FaultKind::ALL.to_vec(),
    }
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn drain(fleet: &mut Fleet, elapsed: Duration) -> Vec<SensorReading> {
    std::iter::from_fn(|| fleet.next_due(elapsed)).collect()
}

#[test]
fn every_device_reads_once_per_interval_spread_evenly_over_it() {
    let mut fleet = Fleet::new(&settings(100, 0.05, 1), start());
    // At t = 0 only device 0 is due; the fleet's 100 readings take the whole second.
    assert_eq!(drain(&mut fleet, Duration::ZERO).len(), 1);
    assert_eq!(drain(&mut fleet, Duration::from_millis(499)).len(), 49);
    let rest = drain(&mut fleet, Duration::from_millis(999));
    assert_eq!(rest.len(), 50);
    assert!(rest.iter().all(|r| r.sequence == 0));
    let ten_seconds = drain(&mut fleet, Duration::from_millis(10_999));
    assert_eq!(ten_seconds.len(), 1000);
    assert_eq!(fleet.emitted(), 1100);
    let last = ten_seconds.last().unwrap();
    assert_eq!(last.sequence, 10);
    assert_eq!(
        last.timestamp,
        start() + chrono::Duration::milliseconds(10_990)
    );
}

#[test]
fn state_is_per_device_and_small_so_100000_devices_cost_a_few_megabytes() {
    assert!(
        std::mem::size_of::<DeviceState>() <= 64,
        "{}",
        std::mem::size_of::<DeviceState>()
    );
    let mut fleet = Fleet::new(&settings(100_000, 0.05, 5), start());
    assert_eq!(fleet.len(), 100_000);
    assert!(fleet.devices.capacity() <= 100_000);
    // One second of the whole fleet, generated without any per-reading state kept.
    assert_eq!(
        drain(&mut fleet, Duration::from_nanos(999_999_999)).len(),
        100_000
    );
    assert_eq!(fleet.devices.capacity(), fleet.devices.len());
}

#[test]
fn types_follow_the_weights_and_iot_device_types() {
    let kinds = assign_types(1000, &DeviceType::ALL);
    let count = |k| kinds.iter().filter(|&&x| x == k).count();
    assert_eq!(count(DeviceType::Temperature), 300);
    assert_eq!(count(DeviceType::Humidity), 300);
    assert_eq!(count(DeviceType::Pressure), 150);
    assert_eq!(count(DeviceType::Light), 150);
    assert_eq!(count(DeviceType::Motion), 100);
    // The default 8 devices cover every kind.
    let eight = assign_types(8, &DeviceType::ALL);
    assert!(
        DeviceType::ALL.iter().all(|k| eight.contains(k)),
        "{eight:?}"
    );

    let narrowed = assign_types(100, &[DeviceType::Pressure, DeviceType::Motion]);
    assert_eq!(
        narrowed
            .iter()
            .filter(|&&k| k == DeviceType::Pressure)
            .count(),
        60
    );
    assert_eq!(
        narrowed
            .iter()
            .filter(|&&k| k == DeviceType::Motion)
            .count(),
        40
    );
}

#[test]
fn the_same_seed_gives_the_same_readings_and_a_new_run_id() {
    let mut a = Fleet::new(&settings(50, 0.1, 42), start());
    let mut b = Fleet::new(&settings(50, 0.1, 42), start());
    let mut c = Fleet::new(&settings(50, 0.1, 43), start());
    let strip = |mut r: SensorReading| {
        r.run_id.clear();
        r
    };
    let ra: Vec<_> = drain(&mut a, Duration::from_secs(20))
        .into_iter()
        .map(strip)
        .collect();
    let rb: Vec<_> = drain(&mut b, Duration::from_secs(20))
        .into_iter()
        .map(strip)
        .collect();
    let rc: Vec<_> = drain(&mut c, Duration::from_secs(20))
        .into_iter()
        .map(strip)
        .collect();
    assert_eq!(ra, rb);
    assert_ne!(ra, rc);
    assert_ne!(a.run_id(), b.run_id());
}

#[test]
fn anomalies_occur_at_the_configured_probability_and_carry_their_kind() {
    let p = 0.05;
    let mut fleet = Fleet::new(&settings(1000, p, 7), start());
    let readings = drain(&mut fleet, Duration::from_secs(200));
    for kind in [
        DeviceType::Temperature,
        DeviceType::Humidity,
        DeviceType::Pressure,
        DeviceType::Light,
        DeviceType::Motion,
    ] {
        let of_kind: Vec<_> = readings.iter().filter(|r| r.device_type == kind).collect();
        let n = of_kind.len() as f64;
        let anomalies = of_kind.iter().filter(|r| r.is_anomaly).count() as f64;
        // Five standard deviations of a binomial count: fails by chance about once in 3 million runs.
        let tolerance = 5.0 * (n * p * (1.0 - p)).sqrt();
        let expected = if kind == DeviceType::Motion {
            // A burst starts with probability p / 4 when none runs; bursts last 4 on average.
            let start = p / MEAN_MOTION_BURST;
            n * start * MEAN_MOTION_BURST / (1.0 + start * (MEAN_MOTION_BURST - 1.0))
        } else {
            n * p
        };
        // Motion anomalies come in bursts of 2..=6, which widens the spread of their count
        // by sqrt(E[L^2] / E[L]) = sqrt(18 / 4).
        let widening = if kind == DeviceType::Motion {
            (18.0f64 / 4.0).sqrt()
        } else {
            1.0
        };
        assert!(
            (anomalies - expected).abs() <= tolerance * widening,
            "{kind}: {anomalies} anomalies in {n} readings, expected about {expected}"
        );
        for r in &of_kind {
            assert_eq!(r.is_anomaly, r.anomaly_kind.is_some());
            if let Some(k) = r.anomaly_kind {
                assert_eq!(k, AnomalyKind::of(kind));
            }
        }
    }
}

#[test]
fn normal_readings_stay_clear_of_the_anomaly_ranges_and_anomalies_fall_in_them() {
    let mut fleet = Fleet::new(&settings(500, 0.05, 3), start());
    // Two simulated days at one reading per device every 5 minutes.
    let mut slow = settings(500, 0.05, 3);
    slow.interval = Duration::from_secs(300);
    let mut fleet_days = Fleet::new(&slow, start());
    let mut readings = drain(&mut fleet, Duration::from_secs(60));
    readings.extend(drain(&mut fleet_days, Duration::from_secs(2 * 86_400)));
    for r in readings {
        let v = r.value;
        let (normal_ok, anomaly_ok) = match r.device_type {
            DeviceType::Temperature => ((0.0..=40.0).contains(&v), v >= 55.0 || v <= -15.0),
            DeviceType::Humidity => ((0.0..=80.0).contains(&v), v >= 95.0),
            DeviceType::Pressure => ((985.0..=1040.0).contains(&v), v <= 955.0),
            DeviceType::Light => (v >= 60.0, v <= 5.0),
            DeviceType::Motion => (v == 0.0, v == 1.0),
        };
        if r.is_anomaly {
            assert!(anomaly_ok, "anomalous {} reading {v}", r.device_type);
        } else {
            assert!(
                normal_ok,
                "normal {} reading {v} at {}",
                r.device_type, r.timestamp
            );
        }
        assert!((0.0..=100.0).contains(&r.battery_level));
        assert!((-115..=-30).contains(&r.signal_strength));
    }
}

#[test]
fn temperature_follows_the_day_warmest_in_the_afternoon() {
    let mut s = settings(30, 0.0, 11);
    s.device_types = vec![DeviceType::Temperature];
    s.interval = Duration::from_secs(3600);
    let mut fleet = Fleet::new(&s, start());
    let readings = drain(&mut fleet, Duration::from_secs(86_400 - 1));
    let mean_at = |hour: u32| {
        let at: Vec<f64> = readings
            .iter()
            .filter(|r| r.timestamp.hour() == hour)
            .map(|r| r.value)
            .collect();
        at.iter().sum::<f64>() / at.len() as f64
    };
    assert!(
        mean_at(15) > mean_at(3) + 2.0,
        "15:00 {} vs 03:00 {}",
        mean_at(15),
        mean_at(3)
    );
}

fn faulty(num_devices: u32, fault_probability: f64, seed: u64) -> SimulatorSettings {
    SimulatorSettings {
        fault_probability,
        ..settings(num_devices, 0.0, seed)
    }
}

#[test]
fn fault_episodes_label_their_readings_with_a_window_that_holds_them() {
    let mut fleet = Fleet::new(&faulty(200, 0.01, 3), start());
    let readings = drain(&mut fleet, Duration::from_secs(600));
    let mut kinds = std::collections::BTreeSet::new();
    for reading in &readings {
        let Some(truth) = &reading.fault else {
            continue;
        };
        kinds.insert(truth.kind);
        assert!(truth.started_at <= truth.ends_at, "{truth:?}");
        if truth.kind == FaultKind::Silence {
            // Carried by the first reading after the silence.
            assert!(reading.timestamp > truth.ends_at, "{reading:?}");
        } else {
            assert!(
                truth.started_at <= reading.timestamp && reading.timestamp <= truth.ends_at,
                "{reading:?}"
            );
        }
        assert!(
            !reading.is_anomaly,
            "a faulty reading is no threshold anomaly too"
        );
    }
    assert_eq!(kinds.len(), FaultKind::ALL.len(), "{kinds:?}");
}

#[test]
fn faulty_values_stay_inside_what_the_threshold_rules_accept() {
    let alert_settings = crate::sensor::rules::AlertSettings::default();
    let mut fleet = Fleet::new(&faulty(300, 0.02, 4), start());
    let readings = drain(&mut fleet, Duration::from_secs(900));
    let faulted: Vec<&SensorReading> = readings.iter().filter(|r| r.fault.is_some()).collect();
    assert!(faulted.len() > 1000, "{}", faulted.len());
    for reading in faulted {
        let breach = crate::sensor::rules::threshold_breach(&alert_settings, reading);
        assert_eq!(breach, None, "{reading:?}");
    }
}

#[test]
fn a_silenced_device_skips_readings_but_never_a_sequence_number() {
    let settings = SimulatorSettings {
        fault_kinds: vec![FaultKind::Silence],
        ..faulty(50, 0.01, 5)
    };
    let mut fleet = Fleet::new(&settings, start());
    let readings = drain(
        &mut fleet,
        Duration::from_secs(1200) - Duration::from_nanos(1),
    );
    assert!(fleet.silenced() > 0);
    assert_eq!(readings.len() as u64 + fleet.silenced(), 50 * 1200);
    assert_eq!(fleet.emitted(), readings.len() as u64);
    let mut next = std::collections::HashMap::new();
    let mut last_at = std::collections::HashMap::new();
    let mut silences = 0;
    for reading in &readings {
        let expected = next.entry(reading.device_id.clone()).or_insert(0u64);
        assert_eq!(reading.sequence, *expected, "{}", reading.device_id);
        *expected += 1;
        let previous: Option<DateTime<Utc>> =
            last_at.insert(reading.device_id.clone(), reading.timestamp);
        if let (Some(truth), Some(previous)) = (&reading.fault, previous) {
            silences += 1;
            // Nothing from the device between the reading before and the one after.
            assert!(previous < truth.started_at && truth.ends_at < reading.timestamp);
            let gap = (reading.timestamp - previous).num_seconds();
            let length = (truth.ends_at - truth.started_at).num_seconds() + 1;
            assert_eq!(gap, length + 1, "{reading:?}");
        }
    }
    assert!(silences > 10, "{silences}");
}

#[test]
fn without_a_fault_probability_no_reading_is_labelled() {
    let mut fleet = Fleet::new(&settings(200, 0.05, 6), start());
    let readings = drain(&mut fleet, Duration::from_secs(300));
    assert!(readings.iter().all(|r| r.fault.is_none()));
    assert_eq!(fleet.silenced(), 0);
}
