//! A class-data sharing archive of Kafka's classes, made once per Java build
//! and Kafka version in the jar cache.
//!
//! A JVM starting a broker spends most of its first seconds finding,
//! parsing and verifying thousands of classes in the jars. Java can write
//! the classes a run loaded into an archive as it exits
//! (`-XX:ArchiveClassesAtExit`), and later JVMs map that archive instead
//! (`-XX:SharedArchiveFile`, added by
//! [`KafkaDistribution::java_command`]): on a 2-core machine a node is ready
//! in about half the time and CPU, and Kafka's tools start faster too.
//!
//! The archive is made by starting one throwaway single-node broker and
//! stopping it cleanly. An archive belongs to the Java build that made it, so
//! its name carries that build. Everything works without one, only slower:
//! a failure to make it is logged and the cluster starts as before.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::distribution::{KafkaDistribution, LogConfig};
use super::node::{self, NodeSpec};
use super::ports::free_ports;
use super::state::new_cluster_id;

/// What the broker logs once it serves clients.
const STARTED: &str = "Kafka Server started";
/// How long the throwaway broker may take to start, and then to stop.
const START_LIMIT: Duration = Duration::from_secs(90);
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// Makes the archive unless it exists; a failure leaves none and is logged.
pub(super) fn ensure(distribution: &KafkaDistribution) {
    let archive = distribution.class_archive();
    if archive.is_file() {
        return;
    }
    tracing::info!(
        "making a class-data archive of Kafka's classes for this Java (once): {}",
        archive.display()
    );
    let started = Instant::now();
    match make(distribution, archive) {
        Ok(()) => tracing::info!(
            "class-data archive made in {:.1?}; Kafka's JVMs start faster from now on",
            started.elapsed()
        ),
        Err(why) => tracing::info!("no class-data archive ({why}); Kafka's JVMs start without one"),
    }
}

fn make(distribution: &KafkaDistribution, archive: &Path) -> Result<(), String> {
    let dir = archive
        .parent()
        .ok_or("the archive path has no directory")?;
    // Names of this process's own, so that two first uses at once do not
    // collide; the finished archive is renamed into place.
    let work = dir.join(format!("making-{}", std::process::id()));
    let partial = dir.join(format!("making-{}.jsa", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let outcome = run_broker(distribution, &work, &partial).and_then(|()| {
        std::fs::rename(&partial, archive).map_err(|e| format!("{}: {e}", archive.display()))
    });
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_file(&partial);
    outcome
}

/// Formats, starts and cleanly stops a single-node broker in `work` whose
/// JVM writes the classes it loaded to `partial` as it exits.
fn run_broker(distribution: &KafkaDistribution, work: &Path, partial: &Path) -> Result<(), String> {
    let ports = free_ports(2).map_err(|e| e.to_string())?;
    let node = NodeSpec {
        id: 1,
        client_port: ports[0],
        controller_port: Some(ports[1]),
        sasl_port: None,
    };
    let voters = format!("1@127.0.0.1:{}", ports[1]);
    let properties = node::write_properties(work, &node, &voters, &BTreeMap::new(), None)
        .map_err(|e| e.to_string())?;
    let formatted = node::format_command(distribution, &properties, &new_cluster_id(), &[])
        .output()
        .map_err(|e| format!("format: {e}"))?;
    if !formatted.status.success() {
        return Err(format!("format exited with {}", formatted.status));
    }
    let node_dir = node::node_dir(work, node.id);
    let logs = node_dir.join("logs");
    let out = std::fs::File::create(node_dir.join("stdout.log")).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut archive_flag = std::ffi::OsString::from("-XX:ArchiveClassesAtExit=");
    archive_flag.push(partial);
    let mut broker = distribution
        .java_command(LogConfig::Broker)
        .arg(archive_flag)
        .arg("-Xmx512m")
        .arg("-XX:+UseG1GC")
        .arg(format!("-Dkafka.logs.dir={}", logs.display()))
        .arg("kafka.Kafka")
        .arg(&properties)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{}: {e}", distribution.java().display()))?;
    let outcome = wait_started(&mut broker, &logs.join("server.log")).and_then(|()| {
        stop(&mut broker)?;
        if partial.is_file() {
            Ok(())
        } else {
            Err("the JVM wrote no archive as it exited".to_string())
        }
    });
    let _ = broker.kill();
    let _ = broker.wait();
    outcome
}

fn wait_started(broker: &mut Child, log: &Path) -> Result<(), String> {
    let since = Instant::now();
    loop {
        if std::fs::read_to_string(log).is_ok_and(|text| text.contains(STARTED)) {
            return Ok(());
        }
        if let Ok(Some(status)) = broker.try_wait() {
            return Err(format!("the broker exited with {status} before it started"));
        }
        if since.elapsed() > START_LIMIT {
            return Err(format!("the broker did not start within {START_LIMIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, then waits: the archive is written during a clean exit.
fn stop(broker: &mut Child) -> Result<(), String> {
    let pid = Pid::from_raw(broker.id() as i32);
    kill(pid, Signal::SIGTERM).map_err(|e| format!("SIGTERM: {e}"))?;
    let since = Instant::now();
    while since.elapsed() < STOP_LIMIT {
        if broker.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("the broker did not stop within {STOP_LIMIT:?}"))
}
