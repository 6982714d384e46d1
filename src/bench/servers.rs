//! The MQTT servers the gateway benchmark measures, as processes: each on a
//! free loopback port, its log in the run's folder, waited for until it
//! accepts connections, and stopped the way its users stop it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use super::BenchError;

/// A server under load: its process and where it listens.
pub(super) struct Server {
    /// The process.
    pub child: tokio::process::Child,
    /// Its id, for its CPU time and peak memory.
    pub pid: i32,
    /// Its MQTT listener.
    pub mqtt: SocketAddr,
    /// Ours: its HTTP listener, where `/metrics` says what Kafka acknowledged.
    pub http: Option<SocketAddr>,
}

/// A loopback address no one listens on now.
pub(super) fn free_address() -> Result<SocketAddr, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| BenchError::Gateway(format!("no free port: {e}")))
}

/// Starts `command` with its standard error in `log`, killed if dropped.
pub(super) fn spawn(
    mut command: Command,
    log: &Path,
    what: &str,
) -> Result<tokio::process::Child, BenchError> {
    let file = std::fs::File::create(log).map_err(|e| BenchError::io(log, e))?;
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .kill_on_drop(true);
    command.spawn().map_err(|e| BenchError::Spawn {
        what: what.to_string(),
        source: e,
    })
}

/// Mosquitto on a free port: anonymous, no persistence, answers without Nagle's delay.
pub(super) async fn start_mosquitto(program: &Path, dir: &Path) -> Result<Server, BenchError> {
    let mqtt = free_address()?;
    let conf = dir.join("mosquitto.conf");
    let text = format!(
        "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n",
        mqtt.port()
    );
    std::fs::write(&conf, text).map_err(|e| BenchError::io(&conf, e))?;
    let mut command = Command::new(program);
    command.arg("-c").arg(&conf);
    let child = spawn(command, &dir.join("mosquitto.log"), "mosquitto")?;
    listening(child, mqtt, None).await
}

/// Waits (up to a minute) until the server accepts connections.
pub(super) async fn listening(
    mut child: tokio::process::Child,
    mqtt: SocketAddr,
    http: Option<SocketAddr>,
) -> Result<Server, BenchError> {
    let pid = child.id().map_or(0, |p| p as i32);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(mqtt).await.is_ok() {
            return Ok(Server {
                child,
                pid,
                mqtt,
                http,
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BenchError::Gateway(format!(
                "the MQTT server exited before listening: {status}"
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            return Err(BenchError::Gateway(format!(
                "nothing listens on {mqtt} after a minute"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ctrl-C (ours finishes what it holds), then a kill after 30 s.
pub(super) async fn stop(server: &mut Server) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid),
        nix::sys::signal::Signal::SIGINT,
    );
    if tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .is_err()
    {
        let _ = server.child.kill().await;
    }
}
