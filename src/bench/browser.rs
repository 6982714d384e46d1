//! Page load times in a real browser: headless Chromium driven over
//! WebDriver by chromedriver (Debian's `chromium` and `chromium-driver`, or
//! the programs `METROCLOUD_CHROMIUM` and `METROCLOUD_CHROMEDRIVER` name).
//!
//! A load time is the browser's own navigation timing: from the start of the
//! navigation to the end of the page's load event, so the request, the HTML,
//! the style sheet and the script are all in it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::http::request;
use crate::config::Config;

/// A WebDriver session on headless Chromium.
pub struct Browser {
    driver: tokio::process::Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

/// Where the browser and its driver are (`METROCLOUD_CHROMIUM`, `METROCLOUD_CHROMEDRIVER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserPrograms {
    /// Chromium.
    pub chromium: PathBuf,
    /// chromedriver.
    pub chromedriver: PathBuf,
}

impl BrowserPrograms {
    /// The programs the configuration names.
    pub fn from_config(config: &Config) -> Self {
        BrowserPrograms {
            chromium: config.chromium.clone(),
            chromedriver: config.chromedriver.clone(),
        }
    }
}

fn program(path: &Path, variable: &str) -> Result<PathBuf, String> {
    if path.exists() {
        Ok(path.to_path_buf())
    } else {
        Err(format!(
            "{} not found (install Debian's chromium and chromium-driver, or set {variable})",
            path.display()
        ))
    }
}

impl Browser {
    /// Starts chromedriver and a browser, its profile under `work_dir`; why
    /// not, when it cannot.
    pub async fn start(work_dir: &Path, programs: &BrowserPrograms) -> Result<Browser, String> {
        let chromium = program(&programs.chromium, "METROCLOUD_CHROMIUM")?;
        let chromedriver = program(&programs.chromedriver, "METROCLOUD_CHROMEDRIVER")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let driver = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", chromedriver.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while request(addr, "GET", "/status", None).await.is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not answer within 30 s".to_string());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let profile = work_dir.join(format!("chromium-profile-{port}"));
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1400,1050",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            profile,
        };
        let created = browser.call("POST", "/session", Some(capabilities)).await?;
        browser.session = created["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {created}"))?
            .to_string();
        Ok(browser)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string());
        let (status, answer) = request(self.addr, method, path, body.as_deref())
            .await
            .map_err(|e| format!("chromedriver {method} {path}: {e}"))?;
        let answer: Value = serde_json::from_slice(&answer)
            .map_err(|e| format!("chromedriver {method} {path}: not JSON: {e}"))?;
        if status != 200 {
            return Err(format!("chromedriver {method} {path}: {status} {answer}"));
        }
        Ok(answer["value"].clone())
    }

    fn session(&self) -> String {
        format!("/session/{}", self.session)
    }

    /// Loads `url`; returns once its load event has fired.
    pub async fn open(&self, url: &str) -> Result<(), String> {
        self.call(
            "POST",
            &format!("{}/url", self.session()),
            Some(json!({ "url": url })),
        )
        .await
        .map(|_| ())
    }

    /// Runs `script` (a function body) in the page; what it returns.
    pub async fn eval(&self, script: &str) -> Result<Value, String> {
        self.call(
            "POST",
            &format!("{}/execute/sync", self.session()),
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// The page as it looks now, as PNG.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        let encoded = self
            .call("GET", &format!("{}/screenshot", self.session()), None)
            .await?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .map_err(|e| format!("screenshot is not base64: {e}"))
    }

    /// Loads `url` and returns the navigation's time to the end of the load event, ms.
    pub async fn load_ms(&self, url: &str) -> Result<f64, String> {
        self.open(url).await?;
        let value = self
            .eval("const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;")
            .await?;
        value
            .as_f64()
            .filter(|ms| *ms > 0.0)
            .ok_or_else(|| format!("no navigation timing for {url}: {value}"))
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self.call("DELETE", &self.session(), None).await;
        let _ = self.driver.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
