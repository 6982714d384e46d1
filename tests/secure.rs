//! A secure cluster (`metrocloud cluster up --secure`) as its users meet it:
//! each user does its own work with the variables `metrocloud cluster env`
//! prints, and is refused, quickly and with a reason, anything else. No
//! password shows in any output.
//!
//! Built with the `tls` feature, the users connect over SASL_SSL (the
//! cluster's CA); without it, over SASL_PLAINTEXT. Both listeners are the
//! same brokers, users and ACLs.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use metrocloud::cluster::{ClusterSpec, LocalCluster, Principal, secure};
use metrocloud::config::{Config, SETTINGS};
use metrocloud::console::{self, ConsoleState, PipelineHandles};
use metrocloud::kafka::security::TLS_BUILT_IN;
use metrocloud::sensor::device::DeviceType;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The secure cluster every test of this file shares, with the pipeline's topics and ACLs.
fn cluster() -> &'static LocalCluster {
    static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        common::init_logs();
        let dir = common::cluster_dir();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                let spec = ClusterSpec {
                    secure: true,
                    ..ClusterSpec::short_lived(dir)
                };
                let (cluster, _) = LocalCluster::up(&spec)
                    .await
                    .unwrap_or_else(|e| panic!("secure cluster did not start: {e}"));
                let config = Config::default();
                cluster
                    .grant(&config.pipeline_names(), &config.pipeline_topics())
                    .await
                    .unwrap_or_else(|e| panic!("topics and ACLs: {e}"));
                cluster
            })
        })
        .join()
        .expect("cluster start thread")
    })
}

/// Held by the tests that use the pipeline's own group, one at a time.
fn pipeline_group() -> std::sync::MutexGuard<'static, ()> {
    static GROUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    GROUP.lock().unwrap_or_else(|e| e.into_inner())
}

/// The variables with which `user` reaches the cluster (`metrocloud cluster env`).
fn access(user: Principal) -> BTreeMap<&'static str, String> {
    cluster().access(user, TLS_BUILT_IN).into_iter().collect()
}

/// Every password of the cluster, none of which may ever be printed.
fn passwords() -> Vec<String> {
    Principal::ALL
        .iter()
        .map(|p| secure::read_password(&secure::password_file(cluster().dir(), *p)).unwrap())
        .collect()
}

fn assert_no_password(what: &str, text: &str) {
    for password in passwords() {
        assert!(!text.contains(&password), "a password in {what}: {text}");
    }
}

/// `metrocloud` with only `vars` of our settings set.
fn metrocloud(vars: &BTreeMap<&str, String>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_metrocloud"));
    for setting in SETTINGS {
        command.env_remove(setting.name);
    }
    command
        .env_remove("RUST_LOG")
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .args(args);
    command
}

/// Runs `command` to its end, which must come within `limit`.
fn finished_within(mut command: Command, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start metrocloud");
    let pid = child.id() as i32;
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(limit);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let output = child.wait_with_output().expect("metrocloud output");
    let took = started.elapsed();
    drop(watchdog);
    assert!(
        took < limit,
        "still running after {limit:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output, took)
}

/// Runs a long-running command until its standard output shows a line
/// `ready` accepts, then stops it with Ctrl-C; its lines and whether it
/// exited with status 0, and its log. Neither its output nor its log shows
/// a password.
fn run_until(command: Command, ready: impl Fn(&str) -> bool) -> (Vec<String>, bool, String) {
    let run = common::interrupt::run_then_interrupt(command, ready);
    let lines: Vec<String> = run.before.into_iter().chain(run.after).collect();
    assert_no_password("the log", &run.stderr);
    assert_no_password("the output", &lines.join("\n"));
    (lines, run.success, run.stderr)
}

/// What Kafka's tool `name` prints, run as `admin` through `cluster tool`'s settings.
fn kafka_tool(name: &str, args: &[&str]) -> String {
    let tool = metrocloud::cluster::tools::find_tool(name).expect("a known tool");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = cluster()
        .tool_command(tool, &args)
        .output()
        .expect("run the tool");
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The number after ` <name> ` in `line`.
fn count(line: &str, name: &str) -> u64 {
    let start = line
        .find(&format!(" {name} "))
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + name.len()
        + 2;
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {line}"))
}

/// `metrocloud consume`, as the consumer's user, processes exactly `readings`
/// readings in the pipeline's group and leaves it at lag 0 (the tests that
/// write to the sensor topic hold [`pipeline_group`] and end this way, so
/// each finds the group with nothing else to read).
fn the_consumer_processes(readings: u64) {
    let consumer = access(Principal::Consumer);
    let (lines, ok, _) = run_until(metrocloud(&consumer, &["consume"]), |l| {
        l.starts_with("consumer:")
            && l.contains(&format!("readings {readings},"))
            && l.contains("lag 0")
    });
    assert!(ok, "{lines:#?}");
    let summary = lines
        .iter()
        .find(|l| l.starts_with("consumer summary:"))
        .unwrap_or_else(|| panic!("no consumer summary in {lines:#?}"));
    assert!(
        summary.starts_with(&format!("consumer summary: {readings} readings")),
        "{summary}"
    );
}

#[test]
fn the_producer_writes_readings_and_the_consumer_processes_each_of_them_in_its_group() {
    let _group = pipeline_group();
    let mut producer = access(Principal::Producer);
    producer.insert("IOT_NUM_DEVICES", "40".into());
    producer.insert("IOT_DATA_INTERVAL_SEC", "0.2".into());
    let (lines, ok, log) = run_until(metrocloud(&producer, &["produce"]), |l| {
        l.starts_with("producer:") && count(l, "acked") >= 500
    });
    // The log names the user and mechanism, never the password.
    let protocol = if TLS_BUILT_IN {
        "SASL_SSL"
    } else {
        "SASL_PLAINTEXT"
    };
    let expected = format!("over {protocol} as producer (SCRAM-SHA-512)");
    assert!(log.contains(&expected), "{expected} not in {log}");
    let summary = lines
        .iter()
        .find(|l| l.starts_with("producer summary:"))
        .unwrap_or_else(|| panic!("no producer summary in {lines:#?}"));
    assert!(ok, "{lines:#?}");
    let acked = count(summary, "acked");
    assert!(acked >= 500, "{summary}");
    assert_eq!(count(summary, "failed"), 0, "{summary}");

    the_consumer_processes(acked);

    // Its group committed every reading: Kafka's own tool, as admin, says lag 0.
    let text = kafka_tool(
        "kafka-consumer-groups",
        &["--describe", "--group", "iot-data-consumer"],
    );
    let lags: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("iot-data-consumer"))
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    assert_eq!(lags.len(), 6, "{text}");
    assert!(lags.iter().all(|lag| *lag == "0"), "{text}");
}

#[test]
fn metrocloud_run_as_the_pipeline_user_loses_nothing() {
    let _group = pipeline_group();
    let data = tempfile::tempdir().unwrap();
    let mut pipeline = access(Principal::Pipeline);
    pipeline.insert("IOT_NUM_DEVICES", "40".into());
    pipeline.insert("IOT_DATA_INTERVAL_SEC", "0.2".into());
    pipeline.insert("METROCLOUD_CONSOLE_ADDR", "127.0.0.1:0".into());
    pipeline.insert("METROCLOUD_DATA_DIR", data.path().display().to_string());
    let (lines, ok, log) = run_until(metrocloud(&pipeline, &["run"]), |l| {
        l.contains("readings/s |")
    });
    let summary = lines
        .iter()
        .find(|l| l.starts_with("pipeline summary:"))
        .unwrap_or_else(|| panic!("no pipeline summary in {lines:#?}\n{log}"));
    assert!(ok, "{lines:#?}\n{log}");
    let acked = count(summary, "acked");
    assert!(acked > 0, "{summary}\n{log}");
    assert_eq!(count(summary, "processed"), acked, "{summary}\n{log}");
    assert_eq!(count(summary, "lost"), 0, "{summary}\n{log}");
}

/// `curl` posting `body` as NDJSON to `url`: the status code and the answer.
fn post_ndjson(url: &str, body: &str) -> (u16, String) {
    let mut curl = Command::new("curl")
        .args(["-s", "-S", "--max-time", "60", "-w", "\n%{http_code}"])
        .args([
            "-H",
            "Content-Type: application/x-ndjson",
            "--data-binary",
            "@-",
            url,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    std::io::Write::write_all(&mut curl.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let output = curl.wait_with_output().unwrap();
    assert!(output.status.success(), "curl: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let (answer, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), answer.to_string())
}

#[test]
fn the_gateway_user_forwards_devices_readings_and_a_refused_ones_dead_letter() {
    let _group = pipeline_group();
    let data = tempfile::tempdir().unwrap();
    let mut gateway = access(Principal::Gateway);
    gateway.insert("METROCLOUD_DATA_DIR", data.path().display().to_string());
    gateway.insert("METROCLOUD_GATEWAY_MQTT_ADDR", "127.0.0.1:0".into());
    gateway.insert("METROCLOUD_GATEWAY_HTTP_ADDR", "127.0.0.1:0".into());
    let mut body: String = (0..20)
        .map(|n| common::reading(DeviceType::Temperature, "temperature-700001", n) + "\n")
        .collect();
    body.push_str("{\"device_id\": \"temperature-700001\"}\n");
    let answer = std::sync::Mutex::new(None);
    let (lines, ok, log) = run_until(metrocloud(&gateway, &["gateway"]), |line| {
        // "gateway: MQTT on 127.0.0.1:P, HTTP on 127.0.0.1:Q/api/v1/readings, ..."
        if let Some(http) = line
            .strip_prefix("gateway: MQTT on ")
            .and_then(|rest| rest.split("HTTP on ").nth(1))
        {
            let url = format!("http://{}", http.split(',').next().unwrap());
            *answer.lock().unwrap() = Some(post_ndjson(&url, &body));
            return false;
        }
        line.starts_with("gateway: accepted")
            && line.contains("forwarded 20 (")
            && line.contains("buffered 0 records")
    });
    let (status, answer) = answer
        .into_inner()
        .unwrap()
        .unwrap_or_else(|| panic!("no address line in {lines:#?}\n{log}"));
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer.starts_with(r#"{"accepted":20,"refused":1,"#),
        "{answer}"
    );
    assert!(ok, "{lines:#?}\n{log}");
    let summary = lines
        .iter()
        .find(|l| l.starts_with("gateway summary:"))
        .unwrap_or_else(|| panic!("no gateway summary in {lines:#?}\n{log}"));
    // Kafka acknowledged the readings and the dead letter, written as gateway.
    assert!(
        summary.contains("forwarded 20, dead letters 1, 0 records left"),
        "{summary}\n{log}"
    );

    // The consumer's user processes them in its group.
    the_consumer_processes(20);
}

#[tokio::test]
async fn the_console_user_sees_brokers_topics_and_messages_and_no_password() {
    let config = Config::from_vars(access(Principal::Console)).expect("console settings");
    let state = ConsoleState::new(
        &config,
        None,
        PipelineHandles::default(),
        CancellationToken::new(),
    );
    let get = |path: &'static str| {
        let state = Arc::clone(&state);
        async move {
            let response = console::router(state)
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .expect("router answers");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
                .await
                .expect("body");
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let (status, brokers) = get("/api/v1/brokers").await;
    assert_eq!(status, StatusCode::OK, "{brokers}");
    let brokers: serde_json::Value = serde_json::from_str(&brokers).unwrap();
    assert_eq!(
        brokers["brokers"].as_array().map(Vec::len),
        Some(3),
        "{brokers}"
    );
    let (status, topic) = get("/api/v1/topics/iot-sensor-data").await;
    assert_eq!(status, StatusCode::OK, "{topic}");
    assert!(topic.contains("\"partitions\""), "{topic}");
    for page in [
        "/",
        "/brokers",
        "/topics",
        "/groups",
        "/messages?topic=iot-sensor-data",
    ] {
        let (status, body) = get(page).await;
        assert_eq!(status, StatusCode::OK, "{page}: {body}");
        assert_no_password(page, &body);
    }
}

#[test]
fn kafkas_own_tools_reach_the_cluster_as_admin_through_cluster_tool() {
    let text = kafka_tool(
        "kafka-topics",
        &["--describe", "--topic", "iot-sensor-data"],
    );
    assert!(text.contains("PartitionCount: 6"), "{text}");
    assert!(text.contains("ReplicationFactor: 3"), "{text}");
}

/// One way of being refused: the settings that bring it, and what the user is told.
struct Refusal {
    what: &'static str,
    user: Principal,
    change: &'static [(&'static str, &'static str)],
    command: &'static str,
    told: &'static str,
}

#[test]
fn each_refusal_ends_the_program_at_once_with_its_reason_and_no_password() {
    let sasl_port = |n: usize| cluster().nodes()[n].sasl_address().unwrap();
    let refusals = [
        Refusal {
            what: "a wrong password",
            user: Principal::Producer,
            change: &[("KAFKA_SASL_PASSWORD", "not-the-password")],
            command: "produce",
            told: "refused authentication",
        },
        Refusal {
            what: "an unknown user",
            user: Principal::Producer,
            change: &[("KAFKA_SASL_USERNAME", "mallory")],
            command: "produce",
            told: "refused authentication",
        },
        Refusal {
            what: "the producer reading the readings",
            user: Principal::Producer,
            change: &[
                ("KAFKA_ALERTS_TOPIC", "iot-sensor-data"),
                ("KAFKA_DLQ_TOPIC", "iot-sensor-data"),
            ],
            command: "consume",
            told: "GroupAuthorizationFailed",
        },
        Refusal {
            what: "the gateway reading the readings",
            user: Principal::Gateway,
            change: &[
                ("KAFKA_ALERTS_TOPIC", "iot-sensor-data"),
                ("KAFKA_DLQ_TOPIC", "iot-sensor-data"),
            ],
            command: "consume",
            told: "GroupAuthorizationFailed",
        },
        Refusal {
            what: "the consumer writing readings",
            user: Principal::Consumer,
            change: &[],
            command: "produce",
            told: "refused writes to iot-sensor-data: TopicAuthorizationFailed",
        },
    ];
    for refusal in refusals {
        let mut vars = access(refusal.user);
        for (name, value) in refusal.change {
            vars.insert(name, value.to_string());
        }
        let (output, took) = finished_within(
            metrocloud(&vars, &[refusal.command]),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{}: {stderr}", refusal.what);
        assert!(stderr.contains(refusal.told), "{}: {stderr}", refusal.what);
        assert_no_password(refusal.what, &stderr);
        eprintln!("{}: refused in {took:?}", refusal.what);
    }

    // Anonymous: no SASL at all, on the SASL listener and on the TLS one.
    let anonymous = |address: String| BTreeMap::from([("KAFKA_BOOTSTRAP_SERVERS", address)]);
    let (output, _) = finished_within(
        metrocloud(&anonymous(sasl_port(0)), &["health"]),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the listener requires SASL"), "{stderr}");
    let tls_port = cluster().nodes()[0].client_address();
    let (output, _) = finished_within(
        metrocloud(&anonymous(tls_port), &["health"]),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the listener may expect TLS"), "{stderr}");
}

#[test]
fn metrocloud_config_says_a_password_is_set_and_never_shows_it() {
    let mut vars = access(Principal::Consumer);
    let password =
        secure::read_password(&secure::password_file(cluster().dir(), Principal::Consumer))
            .unwrap();
    vars.remove("KAFKA_SASL_PASSWORD_FILE");
    vars.insert("KAFKA_SASL_PASSWORD", password.clone());
    let (output, _) = finished_within(metrocloud(&vars, &["config"]), Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        stdout.contains("# KAFKA_SASL_PASSWORD is set (not shown)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("KAFKA_SASL_USERNAME=consumer\n"),
        "{stdout}"
    );
    assert!(!stdout.contains(&password), "{stdout}");
}

#[cfg(feature = "tls")]
#[test]
fn a_broker_certificate_from_another_authority_is_refused() {
    let other = tempfile::tempdir().unwrap();
    // A CA of its own, made the way the cluster made its own.
    let keytool = |args: &[&str]| {
        let status = Command::new("keytool")
            .args(args)
            .current_dir(other.path())
            .output()
            .expect("keytool");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
    };
    keytool(&[
        "-genkeypair",
        "-alias",
        "ca",
        "-keyalg",
        "EC",
        "-groupname",
        "secp256r1",
        "-dname",
        "CN=another",
        "-ext",
        "bc:c",
        "-keystore",
        "o.p12",
        "-storetype",
        "PKCS12",
        "-storepass",
        "changeit",
    ]);
    keytool(&[
        "-exportcert",
        "-rfc",
        "-alias",
        "ca",
        "-keystore",
        "o.p12",
        "-storepass",
        "changeit",
        "-file",
        "other.pem",
    ]);
    let mut vars = access(Principal::Producer);
    vars.insert(
        "KAFKA_SSL_CA_LOCATION",
        other.path().join("other.pem").display().to_string(),
    );
    let (output, _) = finished_within(metrocloud(&vars, &["produce"]), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(
        stderr.contains("not signed by an authority in KAFKA_SSL_CA_LOCATION"),
        "{stderr}"
    );
}

#[cfg(not(feature = "tls"))]
#[test]
fn https_for_the_console_is_refused_by_a_build_without_tls() {
    let vars = BTreeMap::from([
        (
            "METROCLOUD_CONSOLE_TLS_CERT",
            "/etc/ssl/certs/x.pem".to_string(),
        ),
        (
            "METROCLOUD_CONSOLE_TLS_KEY",
            "/etc/ssl/private/x.pem".to_string(),
        ),
    ]);
    let (output, _) = finished_within(metrocloud(&vars, &["console"]), Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("METROCLOUD_CONSOLE_TLS_CERT"), "{stderr}");
    assert!(stderr.contains("--features tls"), "{stderr}");
}

#[cfg(feature = "tls")]
#[test]
fn the_console_serves_https_to_curl_and_nothing_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut vars = access(Principal::Console);
    vars.insert("METROCLOUD_CONSOLE_TLS_CERT", cert.display().to_string());
    vars.insert("METROCLOUD_CONSOLE_TLS_KEY", key.display().to_string());
    vars.insert("METROCLOUD_CONSOLE_ADDR", "127.0.0.1:0".into());
    let log_path = dir.path().join("console.log");
    let mut child = metrocloud(&vars, &["console"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("console");
    let url = common::console_url(&mut child);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // The console asks the cluster for its brokers before it answers: with
    // every other test of this file running beside it on a busy machine,
    // that can take a while. `-S` puts curl's reason in the failure message.
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "60"])
            .args(args)
            .output()
            .expect("curl")
    };
    let brokers = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        &format!("{url}api/v1/brokers"),
    ]);
    let body = String::from_utf8_lossy(&brokers.stdout).into_owned();
    let clear = curl(&[&format!(
        "{}api/v1/brokers",
        url.replacen("https", "http", 1)
    )]);
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert_no_password("the console's log", &log);
    assert!(
        brokers.status.success(),
        "curl over TLS: {}\nthe console's log:\n{log}",
        String::from_utf8_lossy(&brokers.stderr)
    );
    let brokers: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        brokers["brokers"].as_array().map(Vec::len),
        Some(3),
        "{body}"
    );
    assert!(
        !String::from_utf8_lossy(&clear.stdout).contains("\"brokers\""),
        "the console answered in the clear"
    );
}

#[cfg(feature = "tls")]
#[test]
fn tls_on_a_listener_that_does_not_speak_it_is_refused_with_the_protocol_to_use() {
    let mut vars = access(Principal::Producer);
    let sasl_plaintext: Vec<String> = cluster()
        .nodes()
        .iter()
        .filter_map(|n| n.sasl_address())
        .collect();
    vars.insert("KAFKA_BOOTSTRAP_SERVERS", sasl_plaintext.join(","));
    let (output, _) = finished_within(metrocloud(&vars, &["produce"]), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the listener does not speak TLS"),
        "{stderr}"
    );
}
