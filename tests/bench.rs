//! `metrocloud bench` works end to end: in its smoke mode (seconds, tiny counts)
//! it starts a cluster of its own, runs every benchmark with ours and Kafka's
//! tool side by side, and writes a JSON and a markdown report. No figure's size
//! is asserted: timing belongs to the benchmark's own output, not to tests.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn metrocloud() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_metrocloud"));
    // The benchmark starts its own cluster unless it is given one.
    command.env_remove("KAFKA_BOOTSTRAP_SERVERS");
    command
}

fn only_file_with_extension(dir: &Path, extension: &str) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one .{extension} report in {dir:?}: {files:?}"
    );
    files.into_iter().next().unwrap()
}

fn assert_measured(run: &Value, context: &str) {
    for field in ["records_per_sec", "mib_per_sec", "cpu_secs", "peak_rss_mib"] {
        let value = run[field].as_f64().unwrap_or(-1.0);
        assert!(value > 0.0, "{context}: {field} is {value} in {run}");
    }
    assert!(
        run["broker_cpu_secs"].as_f64().is_some(),
        "{context}: the brokers of its own cluster are measured: {run}"
    );
}

#[test]
fn a_smoke_run_measures_ours_and_kafkas_tools_side_by_side_and_writes_both_reports() {
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // This build, whatever other builds lie in the target directory.
    let output = metrocloud()
        .args([
            "bench",
            "all",
            "--smoke",
            "--binary",
            env!("CARGO_BIN_EXE_metrocloud"),
            "--out",
        ])
        .arg(out.path())
        .arg("--dir")
        .arg(work.path())
        .output()
        .expect("run metrocloud bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "metrocloud bench failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(only_file_with_extension(out.path(), "json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["smoke"], true);
    assert_eq!(report["machine"]["local_cluster"], true);

    let producer = report["producer"].as_array().unwrap();
    let labels: Vec<&str> = producer
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 3, "{labels:?}");
    assert!(labels[0].starts_with("sensor readings ("), "{labels:?}");
    assert_eq!(&labels[1..], ["100 B", "1,000 B"]);
    let consumer = report["consumer"].as_array().unwrap();
    assert_eq!(consumer.len(), 1);
    // Every record is accounted for: a producer run sends all of its records, a
    // consumer run reads the whole pre-filled topic (Kafka's tool may read a
    // few more than asked, up to the end of its last fetch).
    let runs = producer
        .iter()
        .map(|c| (c, 2_000..=2_000))
        .chain(consumer.iter().map(|c| (c, 4_000..=4_100)));
    for (comparison, expected_records) in runs {
        for side in ["ours", "peer"] {
            let runs = comparison[side].as_array().unwrap();
            assert_eq!(
                runs.len(),
                1,
                "one run per side in smoke mode: {comparison}"
            );
            assert_measured(&runs[0], &format!("{} {side}", comparison["label"]));
            let records = runs[0]["records"].as_u64().unwrap();
            assert!(
                expected_records.contains(&records),
                "{records} records: {comparison}"
            );
        }
    }

    // librdkafka's kcat is the producer's second peer where it is installed;
    // where it is not, the report says so.
    let kcat_installed = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join("kcat").is_file());
    for comparison in producer {
        let kcat = comparison["others"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["name"].as_str().is_some_and(|n| n.starts_with("kcat")));
        match kcat {
            Some(kcat) => {
                assert!(kcat_installed);
                let run = &kcat["runs"][0];
                assert_measured(run, &format!("{} kcat", comparison["label"]));
                assert_eq!(run["records"], 2_000, "{comparison}");
            }
            None => assert!(
                !kcat_installed,
                "kcat is installed but has no row: {comparison}"
            ),
        }
    }
    let notes = report["producer_notes"].to_string();
    assert_eq!(notes.contains("kcat"), !kcat_installed, "{notes}");
    assert_eq!(
        report["ours_build"], "dynamic (glibc)",
        "the build named by --binary"
    );

    let e2e = &report["end_to_end"];
    let ours = e2e["ours"].as_array().unwrap();
    assert_eq!(ours[0]["rate"], 500);
    assert!(ours[0]["processed"].as_u64().unwrap() > 0, "{e2e}");
    let p50 = ours[0]["p50_ms"].as_f64().unwrap();
    let p99 = ours[0]["p99_ms"].as_f64().unwrap();
    let max = ours[0]["max_ms"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{e2e}");
    assert!(e2e["peer"]["p99_ms"].as_f64().is_some(), "{e2e}");
    assert_eq!(
        ours[0]["peer_ack_ms"].as_array().map(Vec::len),
        Some(2),
        "Kafka's producer offered the same rate: {e2e}"
    );
    assert!(ours[0]["ack_p99_ms"].as_f64().unwrap() > 0.0, "{e2e}");

    let simulator = report["simulator"].as_array().unwrap();
    assert_eq!(simulator[0]["devices"], 1_000);
    assert!(simulator[0]["readings"].as_u64().unwrap() > 0);
    assert!(simulator[0]["peak_rss_mib"].as_f64().unwrap() > 0.0);

    let console = &report["console"];
    assert_eq!(console["devices"], 1_000, "{console}");
    assert_eq!(console["readings"], 2_000, "{console}");
    let pages = console["pages"].as_array().unwrap();
    let paths: Vec<&str> = pages.iter().map(|p| p["path"].as_str().unwrap()).collect();
    for path in [
        "/",
        "/brokers",
        "/topics",
        "/messages",
        "/groups",
        "/fleet",
        "/alerts",
        "/dead-letters",
        "/metrics",
    ] {
        assert!(paths.contains(&path), "{path} timed: {paths:?}");
    }
    for page in pages {
        let (p50, p95, max) = (
            page["p50_ms"].as_f64().unwrap(),
            page["p95_ms"].as_f64().unwrap(),
            page["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p95 && p95 <= max, "{page}");
        assert!(page["bytes"].as_u64().unwrap() > 0, "{page}");
    }
    for (section, records) in [("impact", 2_000), ("latency", 0)] {
        let runs = console[section].as_array().unwrap();
        assert_eq!(
            runs.len(),
            2,
            "one run without and one with a console: {console}"
        );
        assert_eq!(
            runs.iter().filter(|r| r["with_console"] == true).count(),
            1,
            "{console}"
        );
        for run in runs {
            if records > 0 {
                assert_eq!(run["records"], records, "{run}");
                assert!(run["records_per_sec"].as_f64().unwrap() > 0.0, "{run}");
            } else {
                assert!(run["p50_ms"].as_f64().unwrap() > 0.0, "{run}");
            }
            assert_eq!(
                run["console_cpu_secs"].is_number(),
                run["with_console"] == true,
                "the console's CPU is measured when there is one: {run}"
            );
        }
    }

    // Storage: every load made all 4,000 readings durable, ours into both stores and psql's.
    let loads = report["storage"]["runs"].as_array().expect("storage runs");
    let loaders: std::collections::BTreeSet<&str> =
        loads.iter().map(|r| r["who"].as_str().unwrap()).collect();
    assert_eq!(loaders.len(), 3, "{loaders:?}");
    for load in loads {
        assert_eq!(load["rows"], 4_000, "{load}");
        assert!(load["rows_per_sec"].as_f64().unwrap() > 0.0, "{load}");
        assert!(load["bytes_per_reading"].as_f64().unwrap() > 0.0, "{load}");
    }

    // The detector: every kind injected into the smoke fleet is tallied, and
    // its cost is measured beside the rules alone.
    let detect = &report["detect"];
    assert_eq!(detect["devices"], 50, "{detect}");
    // 50 devices for a day at one reading a minute, less the silenced ones.
    let readings = detect["readings"].as_u64().unwrap();
    assert!(readings > 60_000 && readings <= 72_000, "{detect}");
    let kinds = detect["kinds"].as_array().unwrap();
    assert_eq!(
        kinds.len(),
        7 + 1,
        "a line per kind and one for all: {detect}"
    );
    let episodes: u64 = kinds[..7]
        .iter()
        .map(|k| k["episodes"].as_u64().unwrap())
        .sum();
    assert!(episodes > 0, "{detect}");
    assert_eq!(kinds[7]["kind"], "all");
    assert_eq!(kinds[7]["episodes"], episodes, "{detect}");
    for field in ["detector_cpu_us", "rules_cpu_us", "bytes_per_device"] {
        assert!(detect[field].as_f64().unwrap() > 0.0, "{field}: {detect}");
    }
    assert!(detect["clean_readings"].as_u64().unwrap() > 0, "{detect}");

    // The gateway: every publication acknowledged, ours and Mosquitto's, the
    // p99 of each second beside the whole run's, which lies among them, and
    // for ours its group commits (Mosquitto keeps nothing on disk).
    let runs = report["gateway"]["runs"].as_array().expect("gateway runs");
    let servers: std::collections::BTreeSet<&str> =
        runs.iter().map(|r| r["server"].as_str().unwrap()).collect();
    assert_eq!(servers.len(), 2, "ours and Mosquitto: {servers:?}");
    for run in runs {
        let ours = run["server"].as_str().unwrap().starts_with("ours");
        let expected = if run["offered_rate"].is_null() {
            2_000
        } else {
            1_000
        };
        assert_eq!(run["acked"], expected, "{run}");
        let seconds: Vec<f64> = run["p99_by_second_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert!(!seconds.is_empty(), "{run}");
        let p99 = run["p99_ms"].as_f64().unwrap();
        let lowest = seconds.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = seconds.iter().copied().fold(0.0, f64::max);
        assert!(lowest > 0.0 && lowest <= p99 && p99 <= highest, "{run}");
        let commits = &run["group_commits"];
        if ours {
            // At least one commit, at most one per reading.
            let per_sec = commits["per_sec"].as_f64().unwrap();
            let acked_per_sec = run["acked_per_sec"].as_f64().unwrap();
            assert!(per_sec > 0.0 && per_sec <= acked_per_sec, "{run}");
            let p50 = commits["p50_at_most_ms"].as_f64().unwrap();
            let p99 = commits["p99_at_most_ms"].as_f64().unwrap();
            assert!(0.0 < p50 && p50 <= p99, "{run}");
        } else {
            assert!(commits.is_null(), "{run}");
        }
        // The brokers' CPU during the run, beside the server's: ours makes
        // them work (Mosquitto's runs may be too short to see them tick).
        let brokers = &run["brokers"];
        let cores = brokers["cores"].as_f64().unwrap();
        let jit = brokers["jit_percent"].as_f64().unwrap();
        assert!(cores > 0.0 || !ours, "{run}");
        assert!((0.0..=100.0).contains(&jit), "{run}");
    }

    let markdown = std::fs::read_to_string(only_file_with_extension(out.path(), "md")).unwrap();
    // The latency chart is written beside the report and shown in it.
    let chart = only_file_with_extension(out.path(), "svg");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
    let chart_name = chart.file_name().unwrap().to_string_lossy().into_owned();
    assert!(markdown.contains(&format!("]({chart_name})")), "{markdown}");
    for heading in [
        "### Producer: ours (dynamic (glibc)) vs kafka-producer-perf-test",
        "### Consumer: ours vs kafka-consumer-perf-test",
        "### End to end",
        "### Simulator",
        "### Console: pages with 1,000 devices",
        "### Console: our producer without and with a console",
        "### Console: end to end at 500 readings/s",
        "### Storage: a pre-filled topic of 4000 distinct readings",
        "### Fault detection: 50 devices, 1 day at one reading a minute",
        "### Gateway: MQTT QoS 1 readings",
    ] {
        assert!(
            markdown.contains(heading),
            "{heading} missing from\n{markdown}"
        );
    }
    assert!(
        stdout.contains(&markdown),
        "the tables are printed as well as written"
    );
}

#[test]
fn an_unknown_benchmark_is_a_usage_error() {
    let output = metrocloud()
        .args(["bench", "everything"])
        .output()
        .expect("run metrocloud bench");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown benchmark \"everything\"")
            && stderr.contains("producer, consumer, e2e, simulator, console"),
        "{stderr}"
    );
}
