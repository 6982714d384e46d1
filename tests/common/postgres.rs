//! A real PostgreSQL server for a test: Debian's `postgresql` binaries,
//! `initdb` into a temporary folder, `pg_ctl` on a free loopback port, password
//! authentication (SCRAM) for a user of its own. Stopped when dropped.
//!
//! PostgreSQL refuses to run as root; as root, its programs run as the
//! `postgres` user the Debian package creates.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The user and password the server is made with.
pub const USER: &str = "metrocloud";
pub const PASSWORD: &str = "test-secret";

pub struct TestPostgres {
    /// Owns the data folder.
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

/// The folder of `initdb` and `pg_ctl`: on the PATH, else Debian's newest under /usr/lib/postgresql.
fn binaries() -> PathBuf {
    if let Ok(path) = which("initdb") {
        return path.parent().unwrap().to_path_buf();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (Debian: apt-get install postgresql)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn which(program: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.exists())
        .map(|found| std::fs::canonicalize(&found).unwrap_or(found))
        .ok_or(())
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("the postgres user (Debian's postgresql package makes it)");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
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

/// Runs a PostgreSQL program; panics with its output on failure.
fn run(bin: &Path, program: &str, args: &[&str]) {
    let output = command(bin, program)
        .args(args)
        .output()
        .expect("PostgreSQL program runs");
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl TestPostgres {
    /// A new server, initialised and started.
    pub fn start() -> TestPostgres {
        let dir = tempfile::tempdir().expect("temporary folder");
        if is_root() {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, PASSWORD).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let bin = binaries();
        run(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                USER,
                "--auth=scram-sha-256",
                &format!("--pwfile={}", password_file.display()),
                "--no-sync",
            ],
        );
        let server = TestPostgres {
            _dir: dir,
            data,
            bin,
            port: free_port(),
        };
        server.resume();
        server
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

    /// Starts the server (again), waiting until it takes connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.parent().unwrap().display()
        );
        let log = self.data.parent().unwrap().join("server.log");
        run(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server at once, as a crash would.
    pub fn halt(&self) {
        run(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// A client of the server.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connects");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = command(&self.bin, "pg_ctl")
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}
