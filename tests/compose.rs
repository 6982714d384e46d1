//! `docker/compose.yaml` and `docker/Dockerfile` hold what the README promises,
//! checked without a Docker engine: the KRaft quorum agrees with the nodes,
//! every listener is reachable where it is advertised, topics are durable,
//! every image is pinned, every service has a healthcheck, and every
//! MetroCloud service's environment is a valid configuration of ours.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use metrocloud::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

const BROKERS: [&str; 3] = ["kafka1", "kafka2", "kafka3"];
const OUR_SERVICES: [&str; 4] = [
    "topic-setup",
    "kafka-producer",
    "kafka-consumer",
    "metrocloud-aggregate",
];

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The Compose file with YAML merge keys (`<<: *anchor`) applied, as Compose applies them.
fn compose() -> Yaml {
    let docs = YamlLoader::load_from_str(&repo_file("docker/compose.yaml")).expect("valid YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    merged(docs.into_iter().next().unwrap())
}

fn merged(yaml: Yaml) -> Yaml {
    match yaml {
        Yaml::Hash(hash) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let mut inherited = Vec::new();
            for (key, value) in hash {
                if key.as_str() == Some("<<") {
                    match merged(value) {
                        Yaml::Array(list) => inherited.extend(list),
                        other => inherited.push(other),
                    }
                } else {
                    out.insert(key, merged(value));
                }
            }
            for base in inherited {
                if let Yaml::Hash(base) = merged(base) {
                    for (key, value) in base {
                        out.entry(key).or_insert(value);
                    }
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(list) => Yaml::Array(list.into_iter().map(merged).collect()),
        other => other,
    }
}

fn text(yaml: &Yaml) -> String {
    match yaml {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Real(r) => r.clone(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A service's image, with `${VARIABLE:-default}` read as its default.
fn image_of(service: &Yaml) -> String {
    let image = text(&service["image"]);
    match image
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|inner| inner.split_once(":-"))
    {
        Some((_, default)) => default.to_string(),
        None => image,
    }
}

fn env(service: &Yaml, name: &str) -> String {
    let value = &service["environment"][name];
    assert!(!value.is_badvalue(), "{name} is not set in {service:?}");
    text(value)
}

fn env_pairs(service: &Yaml) -> Vec<(String, String)> {
    service["environment"]
        .as_hash()
        .expect("environment as a mapping")
        .iter()
        .map(|(k, v)| (text(k), text(v)))
        .collect()
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let service = &compose["services"][name];
    assert!(!service.is_badvalue(), "no service {name}");
    service
}

fn listeners(value: &str) -> Vec<(String, String, u16)> {
    value
        .split(',')
        .map(|l| {
            let (name, rest) = l.split_once("://").expect("NAME://host:port");
            let (host, port) = rest.rsplit_once(':').expect("host:port");
            (
                name.to_string(),
                host.to_string(),
                port.parse().expect("port"),
            )
        })
        .collect()
}

#[test]
fn the_quorum_voters_are_the_three_nodes_at_their_controller_listeners() {
    let compose = compose();
    let mut voters_seen = BTreeSet::new();
    let mut cluster_ids = BTreeSet::new();
    for (index, name) in BROKERS.iter().enumerate() {
        let node = service(&compose, name);
        let id = env(node, "KAFKA_NODE_ID");
        assert_eq!(id, (index + 1).to_string(), "{name}'s node id");
        assert_eq!(env(node, "KAFKA_PROCESS_ROLES"), "broker,controller");
        voters_seen.insert(env(node, "KAFKA_CONTROLLER_QUORUM_VOTERS"));
        cluster_ids.insert(env(node, "CLUSTER_ID"));
        let controller = listeners(&env(node, "KAFKA_LISTENERS"))
            .into_iter()
            .find(|(listener, _, _)| listener == "CONTROLLER")
            .expect("a CONTROLLER listener");
        let voter = format!("{id}@{}:{}", controller.1, controller.2);
        let voters = env(node, "KAFKA_CONTROLLER_QUORUM_VOTERS");
        assert!(
            voters.split(',').any(|v| v == voter),
            "{voter} missing from {voters}"
        );
        assert_eq!(
            controller.1, *name,
            "the controller listens on its own host name"
        );
    }
    assert_eq!(voters_seen.len(), 1, "every node has the same voter list");
    let voters = voters_seen.into_iter().next().unwrap();
    assert_eq!(voters.split(',').count(), 3, "{voters}");
    assert_eq!(cluster_ids.len(), 1, "one cluster id: {cluster_ids:?}");
    let id = cluster_ids.into_iter().next().unwrap();
    assert_eq!(id.len(), 22, "a base64 UUID: {id}");
}

#[test]
fn each_broker_is_advertised_inside_on_9092_and_on_the_host_at_its_published_port() {
    let compose = compose();
    for (index, name) in BROKERS.iter().enumerate() {
        let node = service(&compose, name);
        let host_port = 29092 + index as u16;
        let bound = listeners(&env(node, "KAFKA_LISTENERS"));
        let advertised = listeners(&env(node, "KAFKA_ADVERTISED_LISTENERS"));
        assert!(bound.contains(&("PLAINTEXT".into(), name.to_string(), 9092)));
        assert!(advertised.contains(&("PLAINTEXT".into(), name.to_string(), 9092)));
        assert!(bound.contains(&("PLAINTEXT_HOST".into(), "0.0.0.0".into(), host_port)));
        assert!(advertised.contains(&("PLAINTEXT_HOST".into(), "localhost".into(), host_port)));
        let ports: Vec<String> = node["ports"].as_vec().unwrap().iter().map(text).collect();
        assert_eq!(ports, [format!("{host_port}:{host_port}")], "{name}");
        let protocols = env(node, "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP");
        for (listener, _, _) in bound {
            assert!(
                protocols.contains(&format!("{listener}:")),
                "{listener} has no protocol"
            );
        }
        assert_eq!(env(node, "KAFKA_INTER_BROKER_LISTENER_NAME"), "PLAINTEXT");
        assert_eq!(env(node, "KAFKA_CONTROLLER_LISTENER_NAMES"), "CONTROLLER");
        let volumes: Vec<String> = node["volumes"].as_vec().unwrap().iter().map(text).collect();
        assert_eq!(volumes, [format!("{name}-data:/var/lib/kafka/data")]);
        assert_eq!(env(node, "KAFKA_LOG_DIRS"), "/var/lib/kafka/data");
    }
}

#[test]
fn topics_are_durable_by_default_and_not_created_by_accident() {
    let compose = compose();
    for name in BROKERS {
        let node = service(&compose, name);
        assert_eq!(env(node, "KAFKA_DEFAULT_REPLICATION_FACTOR"), "3");
        assert_eq!(env(node, "KAFKA_MIN_INSYNC_REPLICAS"), "2");
        assert_eq!(env(node, "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"), "3");
        assert_eq!(env(node, "KAFKA_AUTO_CREATE_TOPICS_ENABLE"), "false");
        assert_eq!(env(node, "KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"), "false");
    }
    for name in OUR_SERVICES {
        let ours = service(&compose, name);
        assert_eq!(env(ours, "KAFKA_REPLICATION_FACTOR"), "3");
        assert_eq!(env(ours, "KAFKA_PARTITIONS"), "6");
        assert_eq!(env(ours, "KAFKA_MIN_INSYNC_REPLICAS"), "2");
    }
}

#[test]
fn every_image_is_pinned_to_a_version_and_kafka_is_4_x() {
    let compose = compose();
    let services = compose["services"].as_hash().unwrap();
    for (name, service) in services {
        let image = image_of(service);
        let (repository, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{image} has no tag"));
        assert!(
            !["latest", "main", "master", "edge"].contains(&tag)
                && tag.chars().any(|c| c.is_ascii_digit()),
            "{} uses {image}",
            text(name)
        );
        if repository == "apache/kafka" {
            assert!(tag.starts_with("4."), "Kafka 4.x: {image}");
            let local = repo_file("docker/build-images.sh");
            assert!(
                local.contains(&format!("kafka_version={tag}\n")),
                "the local Kafka image is the same version as {image}"
            );
        }
    }
}

#[test]
fn every_long_running_service_has_a_healthcheck_and_ours_need_no_shell() {
    let compose = compose();
    for (name, service) in compose["services"].as_hash().unwrap() {
        let test = &service["healthcheck"]["test"];
        assert!(
            test.as_vec().is_some_and(|t| t.len() >= 2),
            "{} has no healthcheck",
            text(name)
        );
    }
    for name in OUR_SERVICES {
        let test: Vec<String> = service(&compose, name)["healthcheck"]["test"]
            .as_vec()
            .unwrap()
            .iter()
            .map(text)
            .collect();
        assert_eq!(
            test,
            ["CMD", "/metrocloud", "health"],
            "{name}: exec form, no shell"
        );
    }
    // A broker's healthcheck asks the broker at the address its PLAINTEXT
    // listener is bound to: its own host name (localhost would be refused).
    for name in ["kafka1", "kafka2", "kafka3", "kafka4"] {
        let broker = service(&compose, name);
        // Compose reads `$$` as a literal `$`, for the shell.
        let test = text(&broker["healthcheck"]["test"][1]).replace("$$", "$");
        assert!(
            test.contains("--bootstrap-server $(hostname):9092"),
            "{name}: {test}"
        );
        let hostname = text(&broker["hostname"]);
        assert!(
            listeners(&env(broker, "KAFKA_LISTENERS")).iter().any(
                |(listener, host, port)| listener == "PLAINTEXT"
                    && *host == hostname
                    && *port == 9092
            ),
            "{name} listens on {hostname}:9092"
        );
    }
    // The healthcheck's subcommand exists in the binary the image holds.
    let help = Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .args(["health", "--help"])
        .output()
        .unwrap();
    assert!(
        help.status.success(),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );
}

#[test]
fn our_services_environment_is_a_valid_configuration_naming_the_brokers() {
    let compose = compose();
    let known: BTreeSet<&str> = Config::default()
        .to_env_lines()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for name in OUR_SERVICES {
        let ours = service(&compose, name);
        let vars = env_pairs(ours);
        for (variable, _) in &vars {
            assert!(
                known.contains(variable.as_str()),
                "{name}: {variable} is not a variable of ours"
            );
        }
        let config = Config::from_vars(vars.clone())
            .unwrap_or_else(|e| panic!("{name}: its environment is refused: {e}"));
        let bootstrap = config.bootstrap_strings();
        assert_eq!(
            bootstrap,
            ["kafka1:9092", "kafka2:9092", "kafka3:9092"],
            "{name}"
        );
        for address in &bootstrap {
            let host = address.split(':').next().unwrap();
            assert!(!service(&compose, host).is_badvalue());
        }
        let image = text(&ours["image"]);
        assert!(image.starts_with("metrocloud:"), "{name} runs {image}");
        assert_eq!(text(&ours["build"]["dockerfile"]), "docker/Dockerfile");
    }
    let command = |name: &str| -> Vec<String> {
        service(&compose, name)["command"]
            .as_vec()
            .unwrap()
            .iter()
            .map(text)
            .collect()
    };
    assert_eq!(command("topic-setup"), ["topics", "ensure"]);
    assert_eq!(command("kafka-producer"), ["produce"]);
    assert_eq!(command("kafka-consumer"), ["consume"]);
    for name in ["kafka-producer", "kafka-consumer"] {
        let condition = &service(&compose, name)["depends_on"]["topic-setup"]["condition"];
        assert_eq!(text(condition), "service_completed_successfully");
    }
}

#[test]
fn the_web_ui_watches_the_three_brokers_on_port_8080() {
    let compose = compose();
    let ui = service(&compose, "kafka-ui");
    assert!(text(&ui["image"]).starts_with("ghcr.io/kafbat/kafka-ui:"));
    assert_eq!(
        env(ui, "KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"),
        "kafka1:9092,kafka2:9092,kafka3:9092"
    );
    let ports: Vec<String> = ui["ports"].as_vec().unwrap().iter().map(text).collect();
    assert_eq!(ports, ["8080:8080"]);
}

#[test]
fn the_console_profile_serves_our_console_to_the_host_only_with_a_token() {
    let compose = compose();
    let console = service(&compose, "metrocloud-console");
    let profiles: Vec<String> = console["profiles"]
        .as_vec()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(profiles, ["console"]);
    let command: Vec<String> = console["command"]
        .as_vec()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(command, ["console", "--console-addr", "0.0.0.0:8081"]);
    let ports: Vec<String> = console["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(ports, ["8081:8081"]);
    // Compose refuses to start it without a token, as the binary would.
    assert!(
        env(console, "METROCLOUD_CONSOLE_TOKEN").starts_with("${METROCLOUD_CONSOLE_TOKEN:?"),
        "{}",
        env(console, "METROCLOUD_CONSOLE_TOKEN")
    );
    let vars: Vec<(String, String)> = env_pairs(console)
        .into_iter()
        .filter(|(name, _)| name != "METROCLOUD_CONSOLE_TOKEN")
        .collect();
    let config = Config::from_vars(vars).expect("the console's environment is valid");
    assert_eq!(
        config.bootstrap_strings(),
        ["kafka1:9092", "kafka2:9092", "kafka3:9092"]
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .args(["console", "--console-addr", "0.0.0.0:8081"])
        .env_remove("METROCLOUD_CONSOLE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(2),
        "no token, no console on 0.0.0.0"
    );
}

#[test]
fn the_scale_profile_adds_a_fourth_broker_outside_the_quorum() {
    let compose = compose();
    let fourth = service(&compose, "kafka4");
    let profiles: Vec<String> = fourth["profiles"]
        .as_vec()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(profiles, ["scale"]);
    assert_eq!(env(fourth, "KAFKA_NODE_ID"), "4");
    assert_eq!(env(fourth, "KAFKA_PROCESS_ROLES"), "broker");
    let voters = env(fourth, "KAFKA_CONTROLLER_QUORUM_VOTERS");
    assert_eq!(
        voters,
        env(
            service(&compose, "kafka1"),
            "KAFKA_CONTROLLER_QUORUM_VOTERS"
        )
    );
    assert!(!voters.split(',').any(|v| v.starts_with("4@")));
    assert_eq!(
        env(fourth, "CLUSTER_ID"),
        env(service(&compose, "kafka1"), "CLUSTER_ID")
    );
    let advertised = listeners(&env(fourth, "KAFKA_ADVERTISED_LISTENERS"));
    assert!(advertised.contains(&("PLAINTEXT_HOST".into(), "localhost".into(), 29095)));
    for name in BROKERS {
        assert!(
            service(&compose, name)["profiles"].is_badvalue(),
            "{name} always runs"
        );
    }
}

#[test]
fn the_image_is_the_static_binary_and_its_data_folder_in_scratch_run_by_a_non_root_user() {
    let dockerfile = repo_file("docker/Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.last(), Some(&"FROM scratch"), "{stages:?}");
    let last_stage = dockerfile.rsplit("FROM scratch").next().unwrap();
    let copies: Vec<&str> = last_stage
        .lines()
        .filter(|l| l.starts_with("COPY"))
        .collect();
    assert_eq!(
        copies,
        [
            "COPY --from=build /metrocloud /metrocloud",
            "COPY --from=build --chown=65532:65532 /data /data"
        ]
    );
    let user = last_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric user id");
    assert_ne!(uid, 0, "not root");
    assert!(last_stage.contains("ENTRYPOINT [\"/metrocloud\"]"));
    for target in ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"] {
        assert!(dockerfile.contains(target), "{target} is built");
    }
    let toolchain = repo_file("rust-toolchain.toml");
    let pinned = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        stages[0].contains(&format!("rust:{pinned}-")),
        "the build stage uses the pinned toolchain {pinned}: {}",
        stages[0]
    );
}

#[test]
fn the_storage_stage_keeps_its_files_in_a_named_volume_that_outlives_its_container() {
    let compose = compose();
    let store = service(&compose, "metrocloud-store");
    assert_eq!(store["command"][0].as_str(), Some("store"));
    let data_dir = env(store, "METROCLOUD_DATA_DIR");
    let mount = store["volumes"][0].as_str().expect("a volume");
    let (volume, path) = mount.split_once(':').expect("volume:path");
    assert_eq!(path, data_dir, "the files go where the volume is mounted");
    assert!(
        !compose["volumes"][volume].is_badvalue(),
        "{volume} is a named volume"
    );
    assert!(store["profiles"].is_badvalue(), "it always runs");
}

#[test]
fn the_gateway_profile_takes_devices_from_the_host_only_with_credentials_and_buffers_in_a_volume() {
    let compose = compose();
    let gateway = service(&compose, "metrocloud-gateway");
    let list = |value: &Yaml| -> Vec<String> { value.as_vec().unwrap().iter().map(text).collect() };
    assert_eq!(list(&gateway["profiles"]), ["gateway"]);
    assert_eq!(list(&gateway["command"]), ["gateway"]);
    assert_eq!(list(&gateway["ports"]), ["1883:1883", "8088:8088"]);
    assert_eq!(env(gateway, "METROCLOUD_GATEWAY_MQTT_ADDR"), "0.0.0.0:1883");
    assert_eq!(env(gateway, "METROCLOUD_GATEWAY_HTTP_ADDR"), "0.0.0.0:8088");
    // Without a credentials file it gets an empty one, which the binary refuses.
    let volumes = list(&gateway["volumes"]);
    let credentials = env(gateway, "METROCLOUD_GATEWAY_CREDENTIALS");
    assert!(
        volumes.iter().any(|v| v
            == &format!("${{METROCLOUD_GATEWAY_CREDENTIALS_FILE:-/dev/null}}:{credentials}:ro")),
        "{volumes:?}"
    );
    let empty = Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .arg("gateway")
        .env("METROCLOUD_GATEWAY_MQTT_ADDR", "0.0.0.0:0")
        .env("METROCLOUD_GATEWAY_CREDENTIALS", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(
        empty.status.code(),
        Some(2),
        "an empty credentials file, no gateway"
    );
    let said = String::from_utf8_lossy(&empty.stderr);
    assert!(
        said.contains("METROCLOUD_GATEWAY_CREDENTIALS: /dev/null: no entries"),
        "{said}"
    );
    // The disk buffer (spool under METROCLOUD_DATA_DIR) is in a named volume.
    let data_dir = env(gateway, "METROCLOUD_DATA_DIR");
    let (volume, path) = volumes[0].split_once(':').expect("volume:path");
    assert_eq!(path, data_dir);
    assert!(
        !compose["volumes"][volume].is_badvalue(),
        "{volume} is a named volume"
    );
    let config = Config::from_vars(env_pairs(gateway)).expect("the gateway's environment is valid");
    assert_eq!(
        config.bootstrap_strings(),
        ["kafka1:9092", "kafka2:9092", "kafka3:9092"]
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .arg("gateway")
        .env("METROCLOUD_GATEWAY_MQTT_ADDR", "0.0.0.0:0")
        .env_remove("METROCLOUD_GATEWAY_CREDENTIALS")
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(2),
        "no credentials, no gateway on 0.0.0.0"
    );
}
