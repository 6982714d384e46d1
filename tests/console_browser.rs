//! The console in a real browser (Debian's Chromium, headless, driven over
//! WebDriver by chromedriver), attached to a running `metrocloud run`.
//!
//! Every page is loaded and checked after its scripts ran: three brokers up;
//! broker 2 shown down and partitions under-replicated after it is killed,
//! on pages that refresh themselves; healthy again after it restarts; the
//! live tail receiving new records; the fleet listing every simulated device;
//! a malformed record showing as a dead letter with its reason. A screenshot
//! of each page is saved under `target/console-screenshots/`.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; `.ci/run` installs
//! them), or `METROCLOUD_CHROMIUM` and `METROCLOUD_CHROMEDRIVER` naming them.
//! This binary kills a broker on purpose, so it has a cluster of its own.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use metrocloud::bench::browser::{Browser, BrowserPrograms};
use metrocloud::config::Config;
use serde_json::Value;

const DEVICES: usize = 24;

/// The browser, and where its screenshots go.
struct Page {
    browser: Browser,
    shots: PathBuf,
}

impl Page {
    async fn start() -> Page {
        let profile = tempfile::tempdir().expect("profile dir").keep();
        let config = Config::from_env().expect("configuration");
        let programs = BrowserPrograms::from_config(&config);
        let browser = Browser::start(&profile, &programs)
            .await
            .unwrap_or_else(|why| {
                panic!("no browser: {why} (.ci/run installs Debian's chromium and chromium-driver)")
            });
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Page { browser, shots }
    }

    async fn open(&self, address: &str) {
        self.browser
            .open(address)
            .await
            .unwrap_or_else(|e| panic!("open {address}: {e}"));
    }

    /// Waits until `script` returns true in the page, or panics with `what`
    /// and the page's text.
    async fn wait_for(&self, limit: Duration, what: &str, script: &str) {
        let deadline = Instant::now() + limit;
        loop {
            let answer = self
                .browser
                .eval(script)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if answer == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.browser.eval("return document.body.innerText").await;
                panic!("timed out after {limit:?} waiting until {what}; the page shows:\n{text:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.browser.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }
}

/// `metrocloud run` against the test cluster, with the console on a free port.
struct Pipeline {
    child: Child,
    console: String,
}

impl Pipeline {
    fn start(bootstrap: &str, logs: &Path) -> Pipeline {
        let mut child = Command::new(env!("CARGO_BIN_EXE_metrocloud"))
            .arg("run")
            .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
            .env("IOT_NUM_DEVICES", DEVICES.to_string())
            .env("IOT_DATA_INTERVAL_SEC", "0.5")
            .env("METROCLOUD_CONSOLE_ADDR", "127.0.0.1:0")
            .env("METROCLOUD_LOG_DIR", logs)
            .env_remove("METROCLOUD_CONSOLE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("metrocloud run starts");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("console: ") {
                    let _ = sender.send(address.trim_end_matches('/').to_string());
                }
            }
        });
        let console = receiver
            .recv_timeout(Duration::from_secs(120))
            .expect("metrocloud run prints the console's address");
        Pipeline { child, console }
    }

    fn page(&self, path: &str) -> String {
        format!("{}{path}", self.console)
    }

    /// Stops it as Ctrl-C would; its exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("signal");
        self.child.wait().expect("metrocloud run ends")
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn every_page_in_a_browser_follows_the_cluster_and_the_fleet() {
    let cluster = common::dedicated();
    let local = cluster.local();
    let logs = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::start(&cluster.bootstrap_list(), logs.path());
    let page = Page::start().await;

    // Overview: healthy, three brokers, every device online.
    page.open(&pipeline.page("/")).await;
    page.wait_for(
        MINUTE,
        "the overview is green with 3 of 3 brokers and every device",
        &format!(
            "const cards = document.body.innerText;
             return document.querySelector('[data-health]').dataset.health === 'green'
                 && cards.includes('3 / 3') && cards.includes('{DEVICES} online');"
        ),
    )
    .await;
    page.screenshot("overview").await;

    page.open(&pipeline.page("/brokers")).await;
    page.wait_for(
        MINUTE,
        "three brokers are listed up",
        "return document.querySelectorAll('tr[data-broker][data-up=\"true\"]').length === 3",
    )
    .await;
    page.screenshot("brokers").await;

    page.open(&pipeline.page("/topics")).await;
    page.wait_for(
        MINUTE,
        "the sensor topic shows 6 partitions in sync",
        "const rows = document.querySelectorAll('[data-topic=\"iot-sensor-data\"] tr[data-partition]');
         return rows.length === 6 && [...rows].every(r => r.innerText.includes('in sync'));",
    )
    .await;
    page.screenshot("topics").await;

    page.open(&pipeline.page("/messages")).await;
    page.wait_for(
        MINUTE,
        "the live tail shows new records (its script ran)",
        "return document.querySelectorAll('#tail tbody tr').length >= 5
             && document.getElementById('tail-state').textContent === 'live'
             && document.querySelectorAll('table.records tr[data-offset]').length > 0",
    )
    .await;
    page.screenshot("messages").await;

    page.open(&pipeline.page("/groups")).await;
    page.wait_for(
        MINUTE,
        "the pipeline's group shows with its 6 partitions",
        "return document.querySelectorAll('[data-group=\"iot-data-consumer\"] tr[data-partition]').length === 6",
    )
    .await;
    page.screenshot("groups").await;

    page.open(&pipeline.page("/fleet")).await;
    page.wait_for(
        MINUTE,
        "the fleet lists every simulated device, online",
        &format!(
            "const rows = document.querySelectorAll('tr[data-device]');
             return rows.length === {DEVICES} && [...rows].every(r => r.innerText.includes('online'));"
        ),
    )
    .await;
    page.screenshot("fleet").await;

    page.open(&pipeline.page("/alerts")).await;
    page.wait_for(
        MINUTE,
        "alerts arrive, with their quality against the ground truth",
        "return document.querySelectorAll('tr[data-kind]').length > 0
             && document.querySelector('p.quality') !== null",
    )
    .await;
    page.screenshot("alerts").await;

    // A record that is not a reading ends as a dead letter with its reason.
    let client = rskafka::client::ClientBuilder::new(cluster.bootstrap.clone())
        .build()
        .await
        .unwrap();
    let partition = client
        .partition_client(
            "iot-sensor-data",
            0,
            rskafka::client::partition::UnknownTopicHandling::Retry,
        )
        .await
        .unwrap();
    partition
        .produce(
            vec![rskafka::record::Record {
                key: Some(b"broken-device".to_vec()),
                value: Some(b"this is not a reading".to_vec()),
                headers: Default::default(),
                timestamp: chrono::Utc::now(),
            }],
            rskafka::client::partition::Compression::NoCompression,
        )
        .await
        .unwrap();
    page.open(&pipeline.page("/dead-letters")).await;
    page.wait_for(
        MINUTE,
        "the malformed record shows as a dead letter with its reason",
        "return document.querySelectorAll('tr[data-reason]').length >= 1
             && document.body.innerText.includes('this is not a reading')",
    )
    .await;
    page.screenshot("dead-letters").await;

    // Broker 2 dies: the brokers page, left open, shows it down by itself.
    page.open(&pipeline.page("/brokers")).await;
    local.kill_node(2).await.expect("kill node 2");
    page.wait_for(
        2 * MINUTE,
        "broker 2 shows down on the open page",
        "const row = document.querySelector('tr[data-broker=\"2\"]');
         return row !== null && row.dataset.up === 'false'
             && document.querySelectorAll('tr[data-broker][data-up=\"true\"]').length === 2",
    )
    .await;
    page.screenshot("brokers-broker-2-down").await;
    page.open(&pipeline.page("/topics")).await;
    page.wait_for(
        MINUTE,
        "the sensor topic's partitions are under-replicated",
        "const rows = document.querySelectorAll('[data-topic=\"iot-sensor-data\"] tr[data-partition]');
         return rows.length === 6 && [...rows].every(r => r.innerText.includes('under-replicated'));",
    )
    .await;
    page.screenshot("topics-under-replicated").await;
    page.open(&pipeline.page("/")).await;
    page.wait_for(
        MINUTE,
        "the overview turns amber and says why",
        "return document.querySelector('[data-health]').dataset.health === 'amber'
             && document.body.innerText.includes('1 of 3 brokers down')",
    )
    .await;
    page.screenshot("overview-broker-2-down").await;

    // It comes back: the open overview turns green again.
    local
        .start_node(2, 2 * MINUTE)
        .await
        .expect("node 2 restarts");
    page.wait_for(
        3 * MINUTE,
        "the overview is green again with 3 of 3 brokers",
        "return document.querySelector('[data-health]').dataset.health === 'green'
             && document.body.innerText.includes('3 / 3')",
    )
    .await;
    page.screenshot("overview-recovered").await;

    page.browser.close().await;
    let status = pipeline.stop();
    assert!(status.success(), "metrocloud run ended with {status}");
}
