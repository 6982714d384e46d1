//! The benchmarks on a secure cluster (`metrocloud bench --secure`): every
//! client, ours and the peers, connects as `admin` over SASL_SSL, each with
//! the settings its own kind of client takes.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::{BenchError, Target};
use crate::cluster::LocalCluster;

/// How every client reaches a secure cluster: as `admin` over SASL_SSL.
pub(super) struct SecureClients {
    /// Our workers' variables (`metrocloud cluster env admin`).
    pub(super) env: Vec<(&'static str, String)>,
    /// Kafka's tools' client settings.
    java: PathBuf,
    /// librdkafka's (`kcat -F`). PLAIN inside TLS: Debian 12's librdkafka
    /// (2.0.2) fails SCRAM against the credentials Kafka 4.1's storage tool
    /// makes, which Kafka's Java client and ours accept; authentication
    /// happens once per connection, so the mechanism weighs nothing in a
    /// throughput run.
    kcat: PathBuf,
}

impl Target {
    /// Gives a Kafka tool the secure cluster's client settings through
    /// `option` (`None`: as its last positional argument).
    pub(super) fn java_settings(&self, command: &mut Command, option: Option<&str>) {
        if let Some(secure) = &self.secure {
            command.args(option).arg(&secure.java);
        }
    }

    /// Gives `kcat` the secure cluster's client settings.
    pub(super) fn kcat_settings(&self, command: &mut Command) {
        if let Some(secure) = &self.secure {
            command.arg("-F").arg(&secure.kcat);
        }
    }
}

/// The client settings of `cluster` (a secure one) for every kind of client.
pub(super) fn clients(
    cluster: &LocalCluster,
    work_dir: &Path,
) -> Result<SecureClients, BenchError> {
    use crate::cluster::{Principal, secure};
    let env = cluster.access(Principal::Admin, true);
    let password = secure::read_password(&secure::password_file(cluster.dir(), Principal::Admin))
        .map_err(|e| BenchError::Cluster(e.to_string()))?;
    let kcat = work_dir.join("kcat-secure.properties");
    let text = format!(
        "security.protocol=SASL_SSL\nsasl.mechanisms=PLAIN\nsasl.username=admin\n\
         sasl.password={password}\nssl.ca.location={}\n",
        secure::ca_file(cluster.dir()).display()
    );
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&kcat);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&kcat)
            .map_err(|e| BenchError::io(&kcat, e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| BenchError::io(&kcat, e))?;
    }
    Ok(SecureClients {
        env,
        java: secure::tools_config(cluster.dir()),
        kcat,
    })
}
