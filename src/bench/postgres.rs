//! A real PostgreSQL server of our own, for the storage benchmark and the
//! tests: Debian's `postgresql` binaries, `initdb` into a folder, `pg_ctl` on a
//! free loopback port, password authentication (SCRAM) for a user of its own.
//! Stopped when dropped.
//!
//! PostgreSQL refuses to run as root; as root, its programs run as the
//! `postgres` user the Debian package creates.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The user the server is made with.
pub const USER: &str = "metrocloud";
/// Its password.
pub const PASSWORD: &str = "local-secret";

/// A running server; see the module documentation.
pub struct LocalPostgres {
    data: PathBuf,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The folder of `initdb` and `pg_ctl`: on the PATH, else Debian's newest under /usr/lib/postgresql.
fn binaries() -> Result<PathBuf, String> {
    if let Some(path) = on_path("initdb") {
        return Ok(path.parent().unwrap_or(Path::new("/")).to_path_buf());
    }
    let missing = || {
        "PostgreSQL's server programs are not installed (Debian: apt-get install postgresql)"
            .to_string()
    };
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| missing())?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().ok_or_else(missing)
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.exists())
        .map(|found| std::fs::canonicalize(&found).unwrap_or(found))
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    let fields: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .ok_or("no postgres user (Debian's postgresql package makes it)")?
        .split(':')
        .collect();
    let id = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or("an unreadable postgres entry in /etc/passwd")
    };
    Ok((id(2)?, id(3)?))
}

/// A PostgreSQL program, to run as `postgres` when this process is root.
fn command(bin: &Path, program: &str) -> Command {
    let program = bin.join(program);
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(&program);
        command
    } else {
        Command::new(&program)
    }
}

/// Runs a PostgreSQL program; says what it printed when it fails.
fn run(bin: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    let output = command(bin, program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl LocalPostgres {
    /// A new server in `dir` (made here), initialised and started.
    pub fn start(dir: &Path) -> Result<LocalPostgres, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if is_root() {
            let (uid, gid) = postgres_user()?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        let data = dir.join("data");
        let password_file = dir.join("password");
        std::fs::write(&password_file, PASSWORD).map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| e.to_string())?;
        let bin = binaries()?;
        run(
            &bin,
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                USER,
                "--auth=scram-sha-256",
                &format!("--pwfile={}", password_file.display()),
                "--no-sync",
            ],
        )?;
        let server = LocalPostgres {
            data,
            bin,
            port: free_port()?,
        };
        server.resume()?;
        Ok(server)
    }

    /// The connection URL, with `password`.
    pub fn url_with(&self, password: &str) -> String {
        format!(
            "postgresql://{USER}:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// The connection URL.
    pub fn url(&self) -> String {
        self.url_with(PASSWORD)
    }

    /// `psql` of the same installation.
    pub fn psql(&self) -> PathBuf {
        self.bin.join("psql")
    }

    /// Starts the server (again), waiting until it takes connections.
    pub fn resume(&self) -> Result<(), String> {
        let folder = self.data.parent().unwrap_or(Path::new("/"));
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            folder.display()
        );
        let log = folder.join("server.log");
        run(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-o",
                &options,
                "-l",
                &log.display().to_string(),
                "-w",
                "start",
            ],
        )
    }

    /// Stops the server at once, as a crash would.
    pub fn halt(&self) -> Result<(), String> {
        let data = self.data.display().to_string();
        run(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "-w", "stop"],
        )
    }

    /// A client of the server.
    pub async fn client(&self) -> Result<tokio_postgres::Client, String> {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("cannot connect to the local PostgreSQL: {e}"))?;
        tokio::spawn(connection);
        Ok(client)
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}
