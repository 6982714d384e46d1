//! The pipeline's stages as processes of their own, as they run in production:
//! consumers and the storage stage, killed the way a crash kills them; and the
//! audit of what the storage stage left on disk.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::ChaosError;
use crate::config::Config;
use crate::store::history::{StoredKey, stored_keys};

/// Starts `metrocloud <args>` configured with `config`, its output into the
/// file `output`; it is killed when this process ends.
pub(super) fn spawn_stage(
    binary: &Path,
    args: &[&std::ffi::OsStr],
    config: &Config,
    output: &Path,
) -> Result<Child, ChaosError> {
    let out = std::fs::File::create(output).map_err(|e| ChaosError::io(output, e))?;
    let err = out.try_clone().map_err(|e| ChaosError::io(output, e))?;
    let mut command = Command::new(binary);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .envs(config.child_env())
        .env("LOG_LEVEL", "INFO")
        .env("ENVIRONMENT", "development")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the
    // child when this process ends, so no stage outlives a scenario.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    command.spawn().map_err(|e| ChaosError::io(binary, e))
}

/// A `metrocloud store` process writing into a data folder of the scenario's.
pub(super) struct StoreProcess {
    child: Child,
}

impl StoreProcess {
    /// Starts `metrocloud store` on `config`'s topic, writing under `data_dir`,
    /// rolling often (every second) so that a kill finds files open and
    /// renamed files not yet committed; its output is appended to `output`.
    pub(super) fn start(
        binary: &Path,
        config: &Config,
        data_dir: &Path,
        output: &Path,
    ) -> Result<StoreProcess, ChaosError> {
        let mut config = config.clone();
        config.store.data_dir = data_dir.to_path_buf();
        config.store.roll_rows = 2_000;
        config.store.roll_after = Duration::from_secs(1);
        let child = spawn_stage(binary, &["store".as_ref()], &config, output)?;
        Ok(StoreProcess { child })
    }

    /// SIGKILL; returns once it is gone.
    pub(super) async fn kill(&mut self) -> Result<(), ChaosError> {
        self.child
            .kill()
            .await
            .map_err(|e| ChaosError::io(Path::new("metrocloud store"), e))
    }

    /// SIGTERM (it rolls what it holds and commits), then SIGKILL after `grace`;
    /// whether it stopped by itself.
    pub(super) async fn stop(&mut self, grace: Duration) -> bool {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.is_ok_and(|s| s.success()),
            Err(_) => {
                let _ = self.child.kill().await;
                false
            }
        }
    }
}

/// What the storage stage's files hold against what was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StoreAudit {
    /// Rows in the files.
    pub rows: u64,
    /// Acknowledged readings with no row at their partition and offset.
    pub missing: u64,
    /// Partition-offset pairs with more than one row.
    pub offsets_twice: u64,
    /// Device-sequence pairs with more than one row.
    pub readings_twice: u64,
}

/// Where a scenario's storage stage keeps readings.
pub(super) enum StoredIn {
    /// Parquet files under this data folder.
    Files(PathBuf),
    /// The `sensor_readings` table of the PostgreSQL database at this URL.
    Postgres(String),
}

/// Every stored reading's key, wherever it is kept.
async fn keys_in(stored: &StoredIn) -> Result<Vec<StoredKey>, ChaosError> {
    match stored {
        StoredIn::Files(dir) => stored_keys(dir).map_err(|e| ChaosError::Log(e.to_string())),
        StoredIn::Postgres(url) => {
            let failed = |e: tokio_postgres::Error| ChaosError::Log(format!("PostgreSQL: {e}"));
            let (client, connection) = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_postgres::connect(url, tokio_postgres::NoTls),
            )
            .await
            .map_err(|_| ChaosError::Log("PostgreSQL did not answer in 10 s".to_string()))?
            .map_err(failed)?;
            tokio::spawn(connection);
            let rows = client
                .query(
                    "SELECT kafka_partition, kafka_offset, device_id, seq FROM sensor_readings",
                    &[],
                )
                .await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                    Vec::new()
                }
                Err(e) => return Err(failed(e)),
            };
            Ok(rows
                .iter()
                .map(|row| StoredKey {
                    partition: row.get(0),
                    offset: row.get(1),
                    device_id: row.get(2),
                    seq: row.get(3),
                })
                .collect())
        }
    }
}

/// Compares what the storage stage kept with the acknowledged readings (by partition and offset).
pub(super) async fn audit_store(
    stored: &StoredIn,
    acked: &HashMap<(i32, i64), (String, u64)>,
) -> Result<StoreAudit, ChaosError> {
    let keys = keys_in(stored).await?;
    let mut offsets = HashSet::new();
    let mut readings = HashSet::new();
    let (mut offsets_twice, mut readings_twice) = (0, 0);
    for key in &keys {
        offsets_twice += u64::from(!offsets.insert((key.partition, key.offset)));
        readings_twice += u64::from(!readings.insert((key.device_id.as_str(), key.seq)));
    }
    let missing = acked.keys().filter(|at| !offsets.contains(*at)).count() as u64;
    Ok(StoreAudit {
        rows: keys.len() as u64,
        missing,
        offsets_twice,
        readings_twice,
    })
}

/// The folder a scenario's storage stage writes to.
pub(super) fn data_dir(scenario_dir: &Path) -> PathBuf {
    scenario_dir.join("data")
}
