//! Who may send readings through the gateway.
//!
//! The credentials file (`METROCLOUD_GATEWAY_CREDENTIALS`) has one entry per
//! line, `device NAME SECRET` or `fleet NAME SECRET`; blank lines and lines
//! starting with `#` are skipped. Over MQTT, NAME is the username and SECRET
//! the password; over HTTP, SECRET is the bearer token, so secrets must
//! differ between entries. A device entry may send readings of that device
//! only (its id is NAME); a fleet entry, of any device. Secrets are compared
//! in constant time, so a wrong guess takes as long as a close one.

use std::path::{Path, PathBuf};

/// Who a connection authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials file: anyone on loopback, for any device.
    Anonymous,
    /// One device, which may send only its own readings.
    Device(String),
    /// A fleet's shared credential, for any of its devices.
    Fleet(String),
}

impl Identity {
    /// Whether this identity may send readings of `device_id`.
    pub fn may_send_for(&self, device_id: &str) -> bool {
        match self {
            Identity::Device(name) => name == device_id,
            Identity::Anonymous | Identity::Fleet(_) => true,
        }
    }

    /// `device t-1`, `fleet plant-a`, `anonymous`: for log lines and dead letters.
    pub fn describe(&self) -> String {
        match self {
            Identity::Anonymous => "anonymous".to_string(),
            Identity::Device(name) => format!("device {name}"),
            Identity::Fleet(name) => format!("fleet {name}"),
        }
    }
}

/// A credentials file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// It cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No entry at all: no device could connect.
    #[error("{0}: no entries (lines of `device|fleet NAME SECRET`): no device could connect")]
    Empty(PathBuf),
    /// A line is not `device|fleet NAME SECRET`, or repeats a name or a secret.
    #[error("{path} line {line}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Its line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The entries of a credentials file.
#[derive(Debug, Clone)]
pub struct Credentials {
    entries: Vec<(Identity, String)>,
}

impl Credentials {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Credentials::parse(&text).map_err(|(line, reason)| match line {
            0 => CredentialsError::Empty(path.to_path_buf()),
            _ => CredentialsError::Invalid {
                path: path.to_path_buf(),
                line,
                reason,
            },
        })
    }

    /// Parses the file's text; on error, the line number and what is wrong
    /// (line 0: no entries at all).
    pub fn parse(text: &str) -> Result<Credentials, (usize, String)> {
        let mut entries: Vec<(Identity, String)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [kind, name, secret] = fields[..] else {
                return Err((number, "expected `device|fleet NAME SECRET`".to_string()));
            };
            let identity = match kind {
                "device" => Identity::Device(name.to_string()),
                "fleet" => Identity::Fleet(name.to_string()),
                other => {
                    return Err((number, format!("{other:?} is neither device nor fleet")));
                }
            };
            if entries.iter().any(|(i, _)| name_of(i) == name) {
                return Err((number, format!("{name} is named twice")));
            }
            if entries.iter().any(|(_, s)| s == secret) {
                return Err((
                    number,
                    "the secret of an earlier entry: HTTP tokens must tell entries apart"
                        .to_string(),
                ));
            }
            entries.push((identity, secret.to_string()));
        }
        if entries.is_empty() {
            return Err((0, "no entries: no device could connect".to_string()));
        }
        Ok(Credentials { entries })
    }

    /// The identity of an MQTT username and password, if they match an entry.
    pub fn login(&self, username: &str, password: &str) -> Option<Identity> {
        let mut found = None;
        for (identity, secret) in &self.entries {
            // Every entry is compared, whatever matched, so time tells nothing.
            let matches =
                same(secret.as_bytes(), password.as_bytes()) & (name_of(identity) == username);
            if matches {
                found = Some(identity.clone());
            }
        }
        found
    }

    /// The identity of an HTTP bearer token.
    pub fn token(&self, token: &str) -> Option<Identity> {
        let mut found = None;
        for (identity, secret) in &self.entries {
            if same(secret.as_bytes(), token.as_bytes()) {
                found = Some(identity.clone());
            }
        }
        found
    }
}

fn name_of(identity: &Identity) -> &str {
    match identity {
        Identity::Device(name) | Identity::Fleet(name) => name,
        Identity::Anonymous => "",
    }
}

/// Equal bytes, compared in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        difference |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# who may send\n\
                        device temperature-000001 t1-secret\n\
                        \n\
                        fleet plant-a fleet-secret\n";

    #[test]
    fn a_device_logs_in_with_its_name_and_secret_and_sends_only_its_own_readings() {
        let credentials = Credentials::parse(FILE).unwrap();
        let device = credentials
            .login("temperature-000001", "t1-secret")
            .expect("right password");
        assert!(device.may_send_for("temperature-000001"));
        assert!(!device.may_send_for("temperature-000002"));
        assert_eq!(credentials.login("temperature-000001", "t1-secreT"), None);
        assert_eq!(credentials.login("temperature-000001", "t1-secret!"), None);
        assert_eq!(credentials.login("temperature-000001", ""), None);
        assert_eq!(credentials.login("plant-a", "t1-secret"), None);
    }

    #[test]
    fn a_fleet_secret_sends_for_any_device_and_tokens_find_their_entry() {
        let credentials = Credentials::parse(FILE).unwrap();
        let fleet = credentials.token("fleet-secret").expect("fleet token");
        assert_eq!(fleet, Identity::Fleet("plant-a".to_string()));
        assert!(fleet.may_send_for("humidity-000042"));
        assert_eq!(
            credentials.token("t1-secret"),
            Some(Identity::Device("temperature-000001".to_string()))
        );
        assert_eq!(credentials.token("nobody"), None);
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        for (text, line, words) in [
            ("device only-a-name\n", 1, "expected"),
            ("# c\nsensor x y\n", 2, "neither device nor fleet"),
            ("device a s1\nfleet a s2\n", 2, "named twice"),
            (
                "device a s1\ndevice b s1\n",
                2,
                "secret of an earlier entry",
            ),
            ("# nothing\n", 0, "no entries"),
        ] {
            let (at, reason) = Credentials::parse(text).expect_err(text);
            assert_eq!(at, line, "{text}");
            assert!(reason.contains(words), "{text}: {reason}");
        }
    }
}
