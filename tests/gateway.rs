//! The device gateway, driven by clients no one here wrote (Mosquitto's
//! `mosquitto_pub`, `curl`, and Python's paho-mqtt for MQTT 5's reason
//! codes), forwarding into the real cluster. Each test runs `metrocloud
//! gateway` as a user does, on ports of its own, with a topic of its own.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::reading;
use metrocloud::config::SETTINGS;
use metrocloud::sensor::device::DeviceType;
use metrocloud::sensor::reading::SensorReading;

/// `metrocloud gateway`, running.
struct Gateway {
    child: Child,
    mqtt_port: u16,
    http: String,
    lines: mpsc::Receiver<String>,
}

/// Starts the gateway with `vars` (on top of ports of its own and the
/// shared cluster's address) and waits for its first line.
fn start_gateway(vars: &[(&str, String)]) -> Gateway {
    start(&["gateway"], vars)
}

/// Runs `metrocloud ARGS` with the gateway's settings and waits for the line
/// that names the gateway's addresses.
fn start(args: &[&str], vars: &[(&str, String)]) -> Gateway {
    let mut command = Command::new(env!("CARGO_BIN_EXE_metrocloud"));
    for setting in SETTINGS {
        command.env_remove(setting.name);
    }
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env("KAFKA_BOOTSTRAP_SERVERS", common::shared().bootstrap_list())
        .env("METROCLOUD_GATEWAY_MQTT_ADDR", "127.0.0.1:0")
        .env("METROCLOUD_GATEWAY_HTTP_ADDR", "127.0.0.1:0")
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().expect("start metrocloud gateway");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(60)).ok())
        .find(|line| line.starts_with("gateway: MQTT on"))
        .expect("the line naming the gateway's addresses");
    // "gateway: MQTT on 127.0.0.1:P, HTTP on 127.0.0.1:Q/api/v1/readings, buffer in ..."
    let address = |after: &str| {
        let start = first.find(after).expect(after) + after.len();
        first[start..].split([',', '/']).next().unwrap().to_string()
    };
    let mqtt = address("MQTT on ");
    Gateway {
        mqtt_port: mqtt.rsplit(':').next().unwrap().parse().unwrap(),
        http: format!("http://{}/api/v1/readings", address("HTTP on ")),
        child,
        lines,
    }
}

impl Gateway {
    /// Ctrl-C; its remaining lines, once it exited with status 0.
    fn stop(mut self) -> Vec<String> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT");
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut rest = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            rest.push(line);
        }
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{status:?}: {rest:#?}");
        rest
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }
}

/// Runs a command to its end (within two minutes) with `input` on its stdin.
fn run(program: &str, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{program} {args:?} still running after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.join().unwrap();
    child.wait_with_output().unwrap()
}

/// `mosquitto_pub` publishing each line of `lines` as one message, QoS 1.
fn mosquitto_pub(gateway: &Gateway, topic: &str, extra: &[&str], lines: &str) -> Output {
    let port = gateway.mqtt_port.to_string();
    let mut args = vec!["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic, "-l"];
    args.extend_from_slice(extra);
    run("mosquitto_pub", &args, lines)
}

/// `curl` posting `body`; the status code and the body of the answer.
fn post(gateway: &Gateway, content_type: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let header = format!("Content-Type: {content_type}");
    let authorization = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec![
        "-s",
        "-S",
        "-X",
        "POST",
        "-H",
        &header,
        "--data-binary",
        "@-",
        "-w",
        "\n%{http_code}",
        "--max-time",
        "60",
    ];
    if let Some(authorization) = &authorization {
        args.extend(["-H", authorization.as_str()]);
    }
    args.push(&gateway.http);
    let output = run("curl", &args, body);
    assert!(output.status.success(), "curl: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// `curl`'s GET of `url`: the body, which must come with status 200.
fn get(url: &str) -> String {
    let output = run("curl", &["-s", "-S", "-f", "--max-time", "30", url], "");
    assert!(output.status.success(), "GET {url}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// An MQTT 5 publication by paho-mqtt, QoS 1: the PUBACK's reason code and reason string.
fn paho_v5(
    gateway: &Gateway,
    topic: &str,
    payload: &str,
    login: Option<(&str, &str)>,
) -> (u8, String) {
    let script = r#"
import json, sys
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, topic, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
payload = sys.stdin.read()
answer = {}
def on_publish(client, userdata, mid, reason_code, properties):
    answer["code"] = reason_code.value
    answer["reason"] = getattr(properties, "ReasonString", "") if properties else ""
client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
if user:
    client.username_pw_set(user, password)
client.on_publish = on_publish
client.connect("127.0.0.1", port)
client.loop_start()
client.publish(topic, payload, qos=1).wait_for_publish(30)
client.disconnect()
client.loop_stop()
print(json.dumps(answer))
"#;
    let (user, password) = login.unwrap_or(("", ""));
    let port = gateway.mqtt_port.to_string();
    let output = run(
        "python3",
        &["-c", script, &port, topic, user, password],
        payload,
    );
    assert!(output.status.success(), "paho: {output:?}");
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        answer["code"].as_u64().unwrap() as u8,
        answer["reason"].as_str().unwrap().to_string(),
    )
}

/// Every record of `topic`: (key, value, headers), in partition and offset order.
async fn records(topic: &str) -> Vec<(String, String, BTreeMap<String, String>)> {
    common::read_all(&common::shared().bootstrap, topic, 6)
        .await
        .into_iter()
        .map(|(_, r)| {
            let text = |b: Option<Vec<u8>>| String::from_utf8(b.unwrap_or_default()).unwrap();
            let headers = r
                .record
                .headers
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
                .collect();
            (text(r.record.key), text(r.record.value), headers)
        })
        .collect()
}

/// Each device's sequence numbers in the order its records are in `topic`.
async fn sequences_by_device(topic: &str) -> BTreeMap<String, Vec<u64>> {
    let mut by_device: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (key, value, _) in records(topic).await {
        let reading: SensorReading = serde_json::from_str(&value).unwrap();
        assert_eq!(key, reading.device_id, "the key is the device id");
        by_device.entry(key).or_default().push(reading.sequence);
    }
    by_device
}

async fn wait_for_records(topic: &str, count: usize) {
    common::eventually(
        Duration::from_secs(90),
        &format!("{count} records in {topic}"),
        || async {
            common::read_all(&common::shared().bootstrap, topic, 6)
                .await
                .len()
                >= count
        },
    )
    .await;
}

fn lines(device_type: DeviceType, device_id: &str, range: std::ops::Range<u64>) -> String {
    range
        .map(|s| reading(device_type, device_id, s) + "\n")
        .collect()
}

fn topic_vars(topic: &str, spool: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_TOPIC_NAME", topic.to_string()),
        ("METROCLOUD_GATEWAY_SPOOL_DIR", spool.display().to_string()),
    ]
}

#[tokio::test]
async fn readings_from_mosquitto_pub_and_curl_reach_the_sensor_topic_keyed_and_in_order_per_device()
{
    let topic = common::unique_topic("gateway-in");
    let spool = tempfile::tempdir().unwrap();
    let gateway = start_gateway(&topic_vars(&topic, spool.path()));

    let temperature = "temperature-000001";
    let sent = mosquitto_pub(
        &gateway,
        &format!("sensors/temperature/{temperature}"),
        &[],
        &lines(DeviceType::Temperature, temperature, 0..200),
    );
    assert!(sent.status.success(), "{sent:?}");
    let humidity = "humidity-000002";
    let sent = mosquitto_pub(
        &gateway,
        &format!("sensors/humidity/{humidity}"),
        &["-V", "mqttv5"],
        &lines(DeviceType::Humidity, humidity, 0..200),
    );
    assert!(sent.status.success(), "{sent:?}");
    let pressure = "pressure-000003";
    let (status, body) = post(
        &gateway,
        "application/x-ndjson",
        None,
        &lines(DeviceType::Pressure, pressure, 0..200),
    );
    assert_eq!(status, 202, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["accepted"], 200, "{body}");
    assert_eq!(answer["results"].as_array().unwrap().len(), 200);
    let (status, body) = post(
        &gateway,
        "application/json",
        None,
        &reading(DeviceType::Pressure, pressure, 200),
    );
    assert_eq!((status, body.as_str()), (202, r#"{"accepted":1}"#));

    wait_for_records(&topic, 601).await;
    let metrics = get(&gateway.http.replace("/api/v1/readings", "/metrics"));
    for line in [
        "metrocloud_gateway_readings_accepted_total 601",
        "metrocloud_gateway_messages_refused_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in {metrics}"
        );
    }
    // Each group commit made at least one of the 601 readings durable.
    let histogram = |metric| {
        metrocloud::gateway::timings::Histogram::parse(&metrics, metric)
            .unwrap_or_else(|| panic!("no {metric} histogram in {metrics}"))
    };
    let commits = histogram(metrocloud::gateway::timings::COMMIT_METRIC);
    assert!((1..=601).contains(&commits.count), "{commits:?}");
    assert!(commits.sum_seconds > 0.0, "{commits:?}");
    // Each of the 400 MQTT QoS 1 readings had its wait inside the gateway,
    // PUBLISH read to PUBACK written, counted once.
    let acks = histogram(metrocloud::gateway::timings::ACK_METRIC);
    assert_eq!(acks.count, 400, "{acks:?}");
    assert!(acks.sum_seconds > 0.0, "{acks:?}");
    let rest = gateway.stop();
    let by_device = sequences_by_device(&topic).await;
    assert_eq!(by_device[temperature], (0..200).collect::<Vec<_>>());
    assert_eq!(by_device[humidity], (0..200).collect::<Vec<_>>());
    assert_eq!(by_device[pressure], (0..201).collect::<Vec<_>>());
    let summary = rest
        .iter()
        .find(|l| l.starts_with("gateway summary:"))
        .unwrap_or_else(|| panic!("no summary in {rest:#?}"));
    assert!(
        summary.starts_with("gateway summary: accepted 601 readings, refused 0, forwarded 601,"),
        "{summary}"
    );
    assert!(
        summary.contains(", 0 records left in the buffer"),
        "{summary}"
    );
}

#[tokio::test]
async fn a_wrong_password_or_token_is_refused_and_a_device_sends_only_its_own_readings() {
    let topic = common::unique_topic("gateway-auth");
    let spool = tempfile::tempdir().unwrap();
    let credentials = spool.path().join("devices");
    std::fs::write(
        &credentials,
        "# who may send\ndevice temperature-000010 t10-secret\nfleet plant-a fleet-secret\n",
    )
    .unwrap();
    let mut vars = topic_vars(&topic, &spool.path().join("spool"));
    vars.push((
        "METROCLOUD_GATEWAY_CREDENTIALS",
        credentials.display().to_string(),
    ));
    let gateway = start_gateway(&vars);
    let own = "sensors/temperature/temperature-000010";
    let one = lines(DeviceType::Temperature, "temperature-000010", 0..1);

    // MQTT 3.1.1: CONNACK "not authorised", for a wrong password and for none.
    for login in [&["-u", "temperature-000010", "-P", "wrong"][..], &[]] {
        let refused = mosquitto_pub(&gateway, own, login, &one);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{refused:?}");
        assert!(stderr.contains("not authorised"), "{stderr}");
    }
    // MQTT 5: CONNACK 0x87 "Not authorized".
    let refused = mosquitto_pub(
        &gateway,
        own,
        &["-V", "mqttv5", "-u", "plant-a", "-P", "t10-secret"],
        &one,
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.to_lowercase().contains("not authorized"), "{stderr}");

    let taken = mosquitto_pub(
        &gateway,
        own,
        &["-u", "temperature-000010", "-P", "t10-secret"],
        &one,
    );
    assert!(taken.status.success(), "{taken:?}");
    // A device's credential covers that device only: MQTT 5 says so with reason code 0x87.
    let other = reading(DeviceType::Humidity, "humidity-000011", 0);
    let (code, reason) = paho_v5(
        &gateway,
        "sensors/humidity/humidity-000011",
        &other,
        Some(("temperature-000010", "t10-secret")),
    );
    assert_eq!(code, 0x87, "{reason}");
    assert!(
        reason.contains("device temperature-000010 may not send readings of humidity-000011"),
        "{reason}"
    );
    // A fleet's credential covers any device.
    let (code, reason) = paho_v5(
        &gateway,
        "sensors/humidity/humidity-000011",
        &other,
        Some(("plant-a", "fleet-secret")),
    );
    assert_eq!(code, 0, "{reason}");

    // HTTP: 401 without a token or with a wrong one; 403 for another device's reading.
    let humidity = reading(DeviceType::Humidity, "humidity-000012", 0);
    assert_eq!(post(&gateway, "application/json", None, &humidity).0, 401);
    assert_eq!(
        post(&gateway, "application/json", Some("guess"), &humidity).0,
        401
    );
    let (status, body) = post(&gateway, "application/json", Some("t10-secret"), &humidity);
    assert_eq!(status, 403, "{body}");
    let (status, body) = post(
        &gateway,
        "application/json",
        Some("fleet-secret"),
        &humidity,
    );
    assert_eq!(status, 202, "{body}");

    wait_for_records(&topic, 3).await;
    gateway.stop();
    let by_device = sequences_by_device(&topic).await;
    let devices: Vec<&str> = by_device.keys().map(String::as_str).collect();
    assert_eq!(
        devices,
        ["humidity-000011", "humidity-000012", "temperature-000010"]
    );
    assert!(by_device.values().all(|s| s == &[0]), "{by_device:?}");
}

#[tokio::test]
async fn a_malformed_reading_is_refused_with_its_reason_and_kept_as_a_dead_letter() {
    let topic = common::unique_topic("gateway-bad");
    let spool = tempfile::tempdir().unwrap();
    let gateway = start_gateway(&topic_vars(&topic, spool.path()));

    let wrong_value = reading(DeviceType::Temperature, "temperature-000020", 0)
        .replace("\"value\":21.5", "\"value\":\"warm\"");
    let (code, reason) = paho_v5(
        &gateway,
        "sensors/temperature/temperature-000020",
        &wrong_value,
        None,
    );
    assert_eq!(code, 0x99, "PUBACK 0x99 Payload format invalid: {reason}");
    assert!(
        reason.starts_with("schema: invalid type: string \"warm\""),
        "{reason}"
    );

    let wrong_topic = reading(DeviceType::Temperature, "temperature-000021", 0);
    let (code, reason) = paho_v5(
        &gateway,
        "sensors/temperature/temperature-000099",
        &wrong_topic,
        None,
    );
    assert_eq!(code, 0x90, "PUBACK 0x90 Topic Name invalid: {reason}");

    let wrong_status =
        reading(DeviceType::Humidity, "humidity-000022", 0).replace("\"ok\"", "\"active\"");
    let (status, body) = post(&gateway, "application/json", None, &wrong_status);
    assert_eq!(status, 400, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["error"], "schema", "{body}");
    assert_eq!(answer["field"], "status", "{body}");

    let batch = format!(
        "{}\nnot json\n",
        reading(DeviceType::Light, "light-000023", 0)
    );
    let (status, body) = post(&gateway, "application/x-ndjson", None, &batch);
    assert_eq!(status, 202, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["accepted"], 1, "{body}");
    assert_eq!(answer["results"][1]["line"], 2, "{body}");
    assert_eq!(answer["results"][1]["status"], "refused", "{body}");
    assert_eq!(answer["results"][1]["error"], "not_json", "{body}");

    let dlq = format!("{topic}-dlq");
    wait_for_records(&dlq, 4).await;
    gateway.stop();
    let letters = records(&dlq).await;
    let mut seen: Vec<(String, String)> = letters
        .iter()
        .map(|(_, _, h)| {
            (
                h["dlq.reason"].clone(),
                h["dlq.origin"].split(" from ").next().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("not_json".to_string(), "http line 2".to_string()),
            ("schema".to_string(), "http line 1".to_string()),
            (
                "schema".to_string(),
                "mqtt topic sensors/temperature/temperature-000020 client \"\"".to_string()
            ),
            (
                "topic_invalid".to_string(),
                "mqtt topic sensors/temperature/temperature-000099 client \"\"".to_string()
            ),
        ]
    );
    assert!(letters.iter().any(|(_, value, _)| value == &wrong_value));
    assert_eq!(
        sequences_by_device(&topic).await.len(),
        1,
        "only the valid reading is in the topic"
    );
}

#[test]
fn beyond_loopback_without_credentials_the_gateway_does_not_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .arg("gateway")
        .env("METROCLOUD_GATEWAY_MQTT_ADDR", "0.0.0.0:0")
        .env_remove("METROCLOUD_GATEWAY_CREDENTIALS")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("0.0.0.0:0 is not a loopback address")
            && stderr.contains("METROCLOUD_GATEWAY_CREDENTIALS"),
        "{stderr}"
    );
}

#[tokio::test]
async fn readings_taken_while_kafka_is_unreachable_wait_on_disk_and_are_forwarded_after_a_restart()
{
    let topic = common::unique_topic("gateway-away");
    let spool = tempfile::tempdir().unwrap();
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut vars = topic_vars(&topic, spool.path());
    vars.push(("KAFKA_BOOTSTRAP_SERVERS", nowhere.to_string()));
    vars.push(("KAFKA_STARTUP_WAIT_SEC", "1".to_string()));
    let gateway = start_gateway(&vars);
    let device = "motion-000030";
    let sent = mosquitto_pub(
        &gateway,
        &format!("sensors/motion/{device}"),
        &[],
        &lines(DeviceType::Motion, device, 0..300),
    );
    assert!(
        sent.status.success(),
        "every reading acknowledged: {sent:?}"
    );
    let rest = gateway.stop();
    let summary = rest
        .iter()
        .find(|l| l.starts_with("gateway summary:"))
        .unwrap();
    assert!(
        summary.contains("accepted 300 readings")
            && summary.contains(", 300 records left in the buffer"),
        "{summary}"
    );

    let gateway = start_gateway(&topic_vars(&topic, spool.path()));
    wait_for_records(&topic, 300).await;
    gateway.stop();
    assert_eq!(
        sequences_by_device(&topic).await[device],
        (0..300).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn every_reading_acknowledged_before_the_gateway_is_killed_is_in_the_topic_after_a_restart() {
    let topic = common::unique_topic("gateway-kill");
    let spool = tempfile::tempdir().unwrap();
    let gateway = start_gateway(&topic_vars(&topic, spool.path()));
    // One QoS 1 publication at a time; each acknowledged sequence number is printed.
    let script = r#"
import sys
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, topic = int(sys.argv[1]), sys.argv[2]
readings = sys.stdin.read().splitlines()
client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
client.connect("127.0.0.1", port)
client.loop_start()
for sequence, reading in enumerate(readings):
    info = client.publish(topic, reading, qos=1)
    try:
        info.wait_for_publish(5)
    except Exception:
        break
    if not info.is_published():
        break
    print(sequence, flush=True)
"#;
    let device = "light-000040";
    let port = gateway.mqtt_port.to_string();
    let mut publisher = Command::new("python3")
        .args(["-c", script, &port, &format!("sensors/light/{device}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    stdin
        .write_all(lines(DeviceType::Light, device, 0..100_000).as_bytes())
        .unwrap();
    drop(stdin);
    let acked_lines = BufReader::new(publisher.stdout.take().unwrap());
    let (tx, acked) = mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        for line in acked_lines.lines().map_while(Result::ok) {
            let _ = tx.send(line.trim().parse().unwrap());
        }
    });
    // Killed once a few hundred readings were acknowledged.
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 300 {
        acknowledged.push(
            acked
                .recv_timeout(Duration::from_secs(60))
                .expect("acknowledgements"),
        );
    }
    gateway.kill();
    publisher.wait().unwrap();
    reader.join().unwrap();
    acknowledged.extend(acked.try_iter());
    assert_eq!(
        acknowledged,
        (0..acknowledged.len() as u64).collect::<Vec<_>>()
    );

    let gateway = start_gateway(&topic_vars(&topic, spool.path()));
    wait_for_records(&topic, acknowledged.len()).await;
    gateway.stop();
    // Replayed readings repeat some that Kafka had before the kill; the first
    // time each appears, they are in order, and every acknowledged one is there.
    let in_topic = &sequences_by_device(&topic).await[device];
    let mut seen = std::collections::BTreeSet::new();
    let first_appearances: Vec<u64> = in_topic
        .iter()
        .copied()
        .filter(|s| seen.insert(*s))
        .collect();
    assert_eq!(
        first_appearances,
        (0..first_appearances.len() as u64).collect::<Vec<_>>(),
        "in order, none missing"
    );
    assert!(
        first_appearances.len() >= acknowledged.len(),
        "{} acknowledged, {} in the topic",
        acknowledged.len(),
        first_appearances.len()
    );
}

#[tokio::test]
async fn metrocloud_run_with_the_gateway_on_forwards_devices_beside_the_simulator_and_its_console_shows_them()
 {
    let topic = common::unique_topic("gateway-run");
    let data = tempfile::tempdir().unwrap();
    let mut vars = topic_vars(&topic, &data.path().join("spool"));
    vars.extend([
        ("METROCLOUD_GATEWAY", "on".to_string()),
        ("METROCLOUD_DATA_DIR", data.path().display().to_string()),
        ("IOT_NUM_DEVICES", "5".to_string()),
        ("KAFKA_CONSUMER_GROUP_ID", format!("{topic}-group")),
        ("KAFKA_ALERTS_TOPIC", format!("{topic}-alerts")),
        ("KAFKA_AGGREGATES_TOPIC", format!("{topic}-aggregates")),
        ("LOG_LEVEL", "WARN".to_string()),
        ("METROCLOUD_CONSOLE_ADDR", "127.0.0.1:0".to_string()),
    ]);
    let pipeline = start(&["run"], &vars);
    let console = std::iter::from_fn(|| pipeline.lines.recv_timeout(Duration::from_secs(60)).ok())
        .find_map(|line| {
            line.strip_prefix("console: ")
                .map(|url| url.trim_end_matches('/').to_string())
        })
        .expect("the console's address");
    let device = "pressure-000050";
    let sent = mosquitto_pub(
        &pipeline,
        &format!("sensors/pressure/{device}"),
        &[],
        &lines(DeviceType::Pressure, device, 0..50),
    );
    assert!(sent.status.success(), "{sent:?}");
    common::eventually(
        Duration::from_secs(90),
        "the device's 50 readings in the topic",
        || async {
            sequences_by_device(&topic)
                .await
                .get(device)
                .map_or(0, Vec::len)
                >= 50
        },
    )
    .await;
    // The console shows the gateway beside the pipeline: on its overview and in /metrics.
    common::eventually(
        Duration::from_secs(30),
        "the overview shows the gateway",
        || async {
            let overview: serde_json::Value =
                serde_json::from_str(&get(&format!("{console}/api/v1/overview"))).unwrap();
            overview["gateway"]["accepted"] == 50 && overview["gateway"]["forwarded"] == 50
        },
    )
    .await;
    let metrics = get(&format!("{console}/metrics"));
    assert!(
        metrics
            .lines()
            .any(|l| l == "metrocloud_gateway_readings_forwarded_total 50"),
        "{metrics}"
    );
    let rest = pipeline.stop();
    assert_eq!(
        sequences_by_device(&topic).await[device],
        (0..50).collect::<Vec<_>>()
    );
    let gateway = rest
        .iter()
        .find(|l| l.starts_with("gateway summary:"))
        .unwrap_or_else(|| panic!("{rest:#?}"));
    assert!(
        gateway.starts_with("gateway summary: accepted 50 readings, refused 0, forwarded 50,"),
        "{gateway}"
    );
    let pipeline = rest
        .iter()
        .find(|l| l.starts_with("pipeline summary:"))
        .unwrap_or_else(|| panic!("{rest:#?}"));
    assert!(pipeline.contains(" lost 0"), "{pipeline}");
}
