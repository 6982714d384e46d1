//! A local cluster that checks who connects and what they may do
//! (`metrocloud cluster up --secure`).
//!
//! Each node gets three listeners on 127.0.0.1:
//! - the client port speaks SASL_SSL: TLS with a certificate from a CA made
//!   for this cluster, then SASL (SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN);
//! - a second client port speaks SASL_PLAINTEXT, for builds without the
//!   `tls` feature, and carries the brokers' own traffic (SCRAM as `admin`);
//! - the controller port speaks SASL_PLAINTEXT with PLAIN as `admin`.
//!
//! Users are made when the storage is formatted (SCRAM credentials in the
//! metadata log), and Kafka's `StandardAuthorizer` refuses everything no ACL
//! allows, `admin` (the super user) excepted. Passwords are random, one file
//! each under `secrets/` (mode 0600); the CA's certificate is `tls/ca.pem`.
//! Certificates come from the JDK's `keytool`, which the cluster's Java has.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;

use super::distribution::KafkaDistribution;
use super::node::NodeSpec;
use super::state::ClusterState;
use super::{ClusterError, LocalCluster};
use crate::kafka::admin::{AclEntry, AclOperation, AclResource, AdminClient, Timeouts};
use crate::kafka::security::{Brokers, Password, Security, SecurityProtocol};
use crate::kafka::topics::{TopicSpec, ensure_topic};

/// The users of a secure cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// The super user: topic set-up, ACLs, the brokers' own traffic.
    Admin,
    /// Writes readings (`metrocloud produce`).
    Producer,
    /// Processes readings (`metrocloud consume`): reads them, writes alerts and dead letters.
    Consumer,
    /// Looks (`metrocloud console`): describes and reads, writes nothing.
    Console,
    /// Takes devices' readings (`metrocloud gateway`): writes readings and
    /// dead letters, reads nothing (a device on the edge is the likeliest
    /// place for a credential to leak from).
    Gateway,
    /// All of `metrocloud run` in one process: producer, consumer, console,
    /// aggregation and storage together (the gateway too, when on), and
    /// nothing more.
    Pipeline,
}

impl Principal {
    /// Every user, in the order they are listed.
    pub const ALL: [Principal; 6] = [
        Principal::Admin,
        Principal::Producer,
        Principal::Consumer,
        Principal::Console,
        Principal::Gateway,
        Principal::Pipeline,
    ];

    /// The user name (principal `User:<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Principal::Admin => "admin",
            Principal::Producer => "producer",
            Principal::Consumer => "consumer",
            Principal::Console => "console",
            Principal::Gateway => "gateway",
            Principal::Pipeline => "pipeline",
        }
    }

    /// The user called `name`.
    pub fn named(name: &str) -> Option<Principal> {
        Principal::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// The names ACLs are given for: the pipeline's topics and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineNames {
    /// Sensor readings.
    pub readings: String,
    /// Alerts.
    pub alerts: String,
    /// Dead letters.
    pub dead_letters: String,
    /// Minute aggregates.
    pub aggregates: String,
    /// The processing side's group.
    pub consumer_group: String,
    /// The aggregation stage's group.
    pub aggregate_group: String,
    /// The storage stage's groups (readings, then aggregates).
    pub store_groups: [String; 2],
}

/// The least-privilege ACLs of each user but `admin`; see the README's table.
pub fn acl_plan(names: &PipelineNames) -> Vec<AclEntry> {
    use AclOperation::{Describe, DescribeConfigs, Read, Write};
    let entry = |user: Principal, resource, name: &str, operation| AclEntry {
        user: user.name().to_string(),
        resource,
        name: name.to_string(),
        operation,
    };
    let topics = [
        &names.readings,
        &names.alerts,
        &names.dead_letters,
        &names.aggregates,
    ];
    let mut groups = vec![&names.consumer_group, &names.aggregate_group];
    groups.extend(&names.store_groups);
    let mut plan = Vec::new();
    // Writing readings; describing the topic (metadata, its settings) to find partitions.
    for operation in [Write, Describe, DescribeConfigs] {
        plan.push(entry(
            Principal::Producer,
            AclResource::Topic,
            &names.readings,
            operation,
        ));
    }
    // Reading readings in its group; writing alerts and dead letters, and
    // reading its own alerts back (to carry open alerts across a restart).
    for operation in [Read, Describe, DescribeConfigs] {
        plan.push(entry(
            Principal::Consumer,
            AclResource::Topic,
            &names.readings,
            operation,
        ));
    }
    plan.push(entry(
        Principal::Consumer,
        AclResource::Group,
        &names.consumer_group,
        Read,
    ));
    for topic in [&names.alerts, &names.dead_letters] {
        for operation in [Write, Read, Describe, DescribeConfigs] {
            plan.push(entry(
                Principal::Consumer,
                AclResource::Topic,
                topic,
                operation,
            ));
        }
    }
    // Forwarding devices' readings, and the dead letters of refused ones.
    for topic in [&names.readings, &names.dead_letters] {
        for operation in [Write, Describe, DescribeConfigs] {
            plan.push(entry(
                Principal::Gateway,
                AclResource::Topic,
                topic,
                operation,
            ));
        }
    }
    // Looking: every topic and group described and read, the cluster described.
    for topic in topics {
        for operation in [Read, Describe, DescribeConfigs] {
            plan.push(entry(
                Principal::Console,
                AclResource::Topic,
                topic,
                operation,
            ));
        }
    }
    for group in &groups {
        plan.push(entry(
            Principal::Console,
            AclResource::Group,
            group,
            Describe,
        ));
    }
    plan.push(entry(
        Principal::Console,
        AclResource::Cluster,
        "kafka-cluster",
        Describe,
    ));
    // The whole pipeline in one process: what the others have, aggregates and storage too.
    for topic in topics {
        for operation in [Write, Read, Describe, DescribeConfigs] {
            plan.push(entry(
                Principal::Pipeline,
                AclResource::Topic,
                topic,
                operation,
            ));
        }
    }
    for group in &groups {
        for operation in [Read, Describe] {
            plan.push(entry(
                Principal::Pipeline,
                AclResource::Group,
                group,
                operation,
            ));
        }
    }
    plan.push(entry(
        Principal::Pipeline,
        AclResource::Cluster,
        "kafka-cluster",
        Describe,
    ));
    plan
}

/// The file holding `principal`'s password.
pub fn password_file(dir: &Path, principal: Principal) -> PathBuf {
    dir.join("secrets")
        .join(format!("{}.password", principal.name()))
}

/// The PEM certificate of the cluster's CA, for clients to trust.
pub fn ca_file(dir: &Path) -> PathBuf {
    dir.join("tls").join("ca.pem")
}

/// The client settings Kafka's own tools run with, as `admin` over SASL_SSL.
pub fn tools_config(dir: &Path) -> PathBuf {
    dir.join("admin-client.properties")
}

pub(super) fn keystore(dir: &Path) -> PathBuf {
    dir.join("tls").join("broker.p12")
}

pub(super) fn keystore_password_file(dir: &Path) -> PathBuf {
    dir.join("secrets").join("keystore.password")
}

/// Reads a password written by [`ensure_material`].
pub fn read_password(path: &Path) -> Result<String, ClusterError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .map_err(|e| ClusterError::io(path, e))
}

/// 24 random letters and digits: about 143 bits.
fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Writes `text` to a new file only its owner can read.
fn write_private(path: &Path, text: &str) -> Result<(), ClusterError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ClusterError::io(path, e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| ClusterError::io(path, e))
}

/// Makes the passwords, the CA and the brokers' certificate on first use,
/// and (again each time) the tools' client settings.
pub fn ensure_material(dir: &Path, distribution: &KafkaDistribution) -> Result<(), ClusterError> {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).map_err(|e| ClusterError::io(&secrets, e))?;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| ClusterError::io(&secrets, e))?;
    let mut files: Vec<PathBuf> = Principal::ALL
        .iter()
        .map(|p| password_file(dir, *p))
        .collect();
    files.push(keystore_password_file(dir));
    for file in files {
        if !file.exists() {
            write_private(&file, &random_password())?;
        }
    }
    if !keystore(dir).exists() {
        let tls = dir.join("tls");
        let made = certificates::make(dir, distribution);
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&tls);
        }
        made?;
    }
    let admin = read_password(&password_file(dir, Principal::Admin))?;
    let properties = format!(
        "# Written by metrocloud: Kafka's tools as admin over SASL_SSL.\n\
         security.protocol=SASL_SSL\n\
         sasl.mechanism=SCRAM-SHA-512\n\
         sasl.jaas.config={}\n\
         ssl.truststore.type=PEM\n\
         ssl.truststore.location={}\n",
        jaas("scram.ScramLoginModule", "admin", &admin, ""),
        ca_file(dir).display()
    );
    let path = tools_config(dir);
    let _ = std::fs::remove_file(&path);
    write_private(&path, &properties)
}

/// A JAAS line for `module` as `user`, plus `extra` options.
fn jaas(module: &str, user: &str, password: &str, extra: &str) -> String {
    format!(
        "org.apache.kafka.common.security.{module} required username=\"{user}\" password=\"{password}\"{extra};"
    )
}

/// The security lines of `node`'s `server.properties`.
pub fn broker_properties(
    dir: &Path,
    node: &NodeSpec,
    sasl_port: u16,
) -> Result<String, ClusterError> {
    let admin = read_password(&password_file(dir, Principal::Admin))?;
    let mut plain_users = String::new();
    for principal in Principal::ALL {
        let password = read_password(&password_file(dir, principal))?;
        plain_users.push_str(&format!(" user_{}=\"{password}\"", principal.name()));
    }
    let keystore_password = read_password(&keystore_password_file(dir))?;
    let mut text = format!(
        "listeners=SASL_SSL://127.0.0.1:{client},SASL_PLAINTEXT://127.0.0.1:{sasl_port}{controller}
advertised.listeners=SASL_SSL://127.0.0.1:{client},SASL_PLAINTEXT://127.0.0.1:{sasl_port}
listener.security.protocol.map=SASL_SSL:SASL_SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=SASL_PLAINTEXT
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config={controller_jaas}
ssl.keystore.type=PKCS12
ssl.keystore.location={keystore}
ssl.keystore.password={keystore_password}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
",
        client = node.client_port,
        controller = node
            .controller_port
            .map(|p| format!(",CONTROLLER://127.0.0.1:{p}"))
            .unwrap_or_default(),
        controller_jaas = jaas(
            "plain.PlainLoginModule",
            "admin",
            &admin,
            &format!(" user_admin=\"{admin}\"")
        ),
        keystore = keystore(dir).display(),
    );
    for listener in ["sasl_ssl", "sasl_plaintext"] {
        text.push_str(&format!(
            "listener.name.{listener}.sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN\n"
        ));
        for mechanism in ["scram-sha-512", "scram-sha-256"] {
            text.push_str(&format!(
                "listener.name.{listener}.{mechanism}.sasl.jaas.config={}\n",
                jaas("scram.ScramLoginModule", "admin", &admin, "")
            ));
        }
        text.push_str(&format!(
            "listener.name.{listener}.plain.sasl.jaas.config={}\n",
            jaas("plain.PlainLoginModule", "admin", &admin, &plain_users)
        ));
    }
    Ok(text)
}

/// The storage tool's arguments that create every user, both SCRAM hashes.
pub fn scram_arguments(dir: &Path) -> Result<Vec<String>, ClusterError> {
    let mut args = Vec::new();
    for principal in Principal::ALL {
        let password = read_password(&password_file(dir, principal))?;
        for mechanism in ["SCRAM-SHA-512", "SCRAM-SHA-256"] {
            args.push("--add-scram".to_string());
            args.push(format!(
                "{mechanism}=[name={},password={password}]",
                principal.name()
            ));
        }
    }
    Ok(args)
}

/// The addresses of a cluster's nodes: the SASL_SSL (client) ports when
/// `tls` or the cluster is plaintext, else the SASL_PLAINTEXT ones.
fn addresses(state: &ClusterState, tls: bool) -> Vec<String> {
    if state.secure && !tls {
        state
            .nodes
            .iter()
            .filter_map(NodeSpec::sasl_address)
            .collect()
    } else {
        state.nodes.iter().map(NodeSpec::client_address).collect()
    }
}

/// The brokers of the cluster in `dir` as `principal` reaches them over
/// SASL_PLAINTEXT (or a plaintext cluster's, as anyone). A password file that
/// cannot be read is an error, never a quiet fall-back to plaintext.
pub(super) fn brokers_for(
    dir: &Path,
    state: &ClusterState,
    principal: Principal,
) -> Result<Brokers, ClusterError> {
    let mut security = Security::default();
    if state.secure {
        security.protocol = SecurityProtocol::SaslPlaintext;
        security.username = Some(principal.name().to_string());
        security.password = Some(Password::new(read_password(&password_file(
            dir, principal,
        ))?));
    }
    Ok(Brokers::new(addresses(state, false), Arc::new(security)))
}

impl LocalCluster {
    /// How `principal` reaches a secure cluster: SASL_SSL when `tls`, else
    /// SASL_PLAINTEXT, with SCRAM-SHA-512 and its password file; a plaintext
    /// cluster's client ports for anyone.
    pub fn access(&self, principal: Principal, tls: bool) -> Vec<(&'static str, String)> {
        let state = self.lock_state();
        let mut env = vec![("KAFKA_BOOTSTRAP_SERVERS", addresses(&state, tls).join(","))];
        if !state.secure {
            return env;
        }
        env.extend([
            (
                "KAFKA_SECURITY_PROTOCOL",
                if tls { "SASL_SSL" } else { "SASL_PLAINTEXT" }.to_string(),
            ),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".to_string()),
            ("KAFKA_SASL_USERNAME", principal.name().to_string()),
            (
                "KAFKA_SASL_PASSWORD_FILE",
                password_file(&self.dir, principal).display().to_string(),
            ),
        ]);
        if tls {
            env.push((
                "KAFKA_SSL_CA_LOCATION",
                ca_file(&self.dir).display().to_string(),
            ));
        }
        env
    }

    /// The brokers as `principal` reaches them over SASL_PLAINTEXT (or a
    /// plaintext cluster's, as anyone).
    pub fn brokers_as(&self, principal: Principal) -> Result<Brokers, ClusterError> {
        brokers_for(&self.dir, &self.lock_state(), principal)
    }

    /// An admin client for this cluster with short timeouts (it is on
    /// loopback); as `admin` when the cluster is secure.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(
            self.admin_brokers.clone(),
            Timeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_secs(10),
            },
        )
    }

    /// The client settings Kafka's tools need for this cluster (a secure
    /// one's: `admin` over SASL_SSL), as a file name.
    pub fn tools_config(&self) -> Option<String> {
        self.is_secure()
            .then(|| tools_config(&self.dir).display().to_string())
    }

    /// Creates `topics` and every user's ACLs ([`acl_plan`] of `names`), as
    /// `admin`: the other users may not create topics.
    pub async fn grant(
        &self,
        names: &PipelineNames,
        topics: &[TopicSpec],
    ) -> Result<(), ClusterError> {
        let admin = self.admin();
        for spec in topics {
            ensure_topic(&admin, spec)
                .await
                .map_err(|e| ClusterError::Mismatch(format!("topic {}: {e}", spec.name)))?;
        }
        admin.create_acls(&acl_plan(names)).await?;
        Ok(())
    }
}

mod certificates;
#[cfg(test)]
mod tests;
