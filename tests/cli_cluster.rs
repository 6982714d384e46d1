//! `metrocloud cluster` as a user runs it: detached nodes, clear errors, clean stop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `metrocloud cluster --dir DIR ARGS`.
fn cluster(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .arg("cluster")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .envs(vars.iter().copied())
        .output()
        .expect("run metrocloud")
}

/// Stops and removes a cluster started by a test, even when the test fails.
struct Purge(PathBuf);

impl Drop for Purge {
    fn drop(&mut self) {
        if self.0.join("cluster.json").exists() {
            let _ = cluster(&self.0, &["down", "--purge"], &[]);
        }
    }
}

/// A base port with `count` free consecutive ports after it.
fn free_port_run(count: u16) -> u16 {
    for _ in 0..100 {
        let base = 20_000 + rand::random::<u16>() % 40_000;
        let held: Vec<_> = (base..base + count)
            .map(|p| TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if held.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no run of {count} free ports found");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn kafka_processes_in(dir: &Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).into_owned())
        .filter(|cmdline| cmdline.contains("kafka.Kafka") && cmdline.contains(&needle))
        .count()
}

#[test]
fn up_starts_a_detached_cluster_a_second_up_exits_0_and_down_purge_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _purge = Purge(dir.clone());
    let client = free_port_run(3).to_string();
    let controller = free_port_run(3).to_string();
    let ports = [
        "--client-port-base",
        client.as_str(),
        "--controller-port-base",
        controller.as_str(),
    ];

    let first = cluster(&dir, &[&["up"], &ports[..]].concat(), &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let bootstrap = format!(
        "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{client},127.0.0.1:{},127.0.0.1:{}",
        client.parse::<u16>().unwrap() + 1,
        client.parse::<u16>().unwrap() + 2
    );
    assert!(
        text(&first.stdout).contains(&bootstrap),
        "{}",
        text(&first.stdout)
    );
    assert_eq!(kafka_processes_in(&dir), 3);

    let second = cluster(&dir, &[&["up"], &ports[..]].concat(), &[]);
    assert_eq!(second.status.code(), Some(0));
    assert!(
        text(&second.stdout).contains("already running"),
        "{}",
        text(&second.stdout)
    );
    assert_eq!(kafka_processes_in(&dir), 3, "a second up starts nothing");

    let status = cluster(&dir, &["status"], &[]);
    let status = text(&status.stdout);
    let rows: Vec<&str> = status
        .lines()
        .filter(|l| l.contains("broker,controller"))
        .collect();
    assert_eq!(rows.len(), 3, "{status}");
    assert!(
        rows.iter()
            .all(|r| r.contains(" up ") && r.contains("registered")),
        "{status}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.trim_end().ends_with("leader"))
            .count(),
        1,
        "{status}"
    );

    let listed = cluster(&dir, &["tool", "kafka-topics", "--list"], &[]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));

    let down = cluster(&dir, &["down", "--purge"], &[]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(kafka_processes_in(&dir), 0);
    assert!(!dir.exists());
}

#[test]
fn a_port_already_taken_is_named_with_how_to_pick_another() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _purge = Purge(dir.clone());
    let taken = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let controller = free_port_run(3).to_string();

    let output = cluster(
        &dir,
        &[
            "up",
            "--client-port-base",
            &port,
            "--controller-port-base",
            &controller,
        ],
        &[],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("port {port} (client port of node 1)")),
        "{stderr}"
    );
    assert!(stderr.contains("--client-port-base"), "{stderr}");
    assert_eq!(kafka_processes_in(&dir), 0);
}

#[test]
fn a_node_that_dies_on_start_is_reported_with_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _purge = Purge(dir.clone());
    let client = free_port_run(3).to_string();
    let controller = free_port_run(3).to_string();

    let output = cluster(
        &dir,
        &[
            "up",
            "--client-port-base",
            &client,
            "--controller-port-base",
            &controller,
        ],
        &[("METROCLOUD_KAFKA_HEAP", "bogus")],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("died on start"), "{stderr}");
    assert!(
        stderr.contains("stdout.log"),
        "the log's path is given: {stderr}"
    );
    assert!(
        stderr.contains("heap size: -Xmsbogus"),
        "its last lines are shown: {stderr}"
    );
}

/// A directory holding only a link to the real `java`, to run with no Maven on `PATH`.
fn path_with_java_only(tmp: &Path) -> PathBuf {
    let java = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("java"))
                .find(|candidate| candidate.is_file())
        })
        .expect("java on PATH");
    let bin = tmp.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(java, bin.join("java")).unwrap();
    bin
}

#[test]
fn no_java_is_explained_with_how_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .args(["cluster", "--dir"])
        .arg(tmp.path().join("cluster"))
        .arg("up")
        .env("PATH", &empty)
        .env_remove("JAVA_HOME")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no Java found"), "{stderr}");
    assert!(stderr.contains("JAVA_HOME"), "{stderr}");
}

#[test]
fn no_maven_for_the_first_fetch_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .args(["cluster", "--dir"])
        .arg(tmp.path().join("cluster"))
        .arg("up")
        .env("PATH", path_with_java_only(tmp.path()))
        .env_remove("JAVA_HOME")
        .env("METROCLOUD_KAFKA_CACHE", tmp.path().join("empty-cache"))
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Maven (mvn) not found"), "{stderr}");
}

#[test]
fn an_unreachable_registry_is_explained_with_what_maven_said() {
    // Real Maven, told to stay offline with an empty local repository: it cannot resolve Kafka.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _purge = Purge(dir.clone());
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".m2")).unwrap();
    std::fs::write(
        home.join(".m2/settings.xml"),
        format!(
            "<settings><offline>true</offline><localRepository>{}</localRepository></settings>",
            tmp.path().join("repository").display()
        ),
    )
    .unwrap();
    let client = free_port_run(3).to_string();
    let controller = free_port_run(3).to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .args(["cluster", "--dir"])
        .arg(&dir)
        .args([
            "up",
            "--client-port-base",
            &client,
            "--controller-port-base",
            &controller,
        ])
        // Maven finds its settings through Java's user.home.
        .env("MAVEN_OPTS", format!("-Duser.home={}", home.display()))
        .env("METROCLOUD_KAFKA_CACHE", tmp.path().join("empty-cache"))
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("could not fetch Apache Kafka 4.1.1 with Maven"),
        "{stderr}"
    );
    assert!(stderr.contains("Maven said"), "{stderr}");
    assert!(!tmp.path().join("empty-cache/kafka-4.1.1/libs").exists());
}
