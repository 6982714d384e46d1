//! How a client proves who it is to the brokers, and how its bytes are
//! protected on the way: Kafka's four security protocols, SASL mechanisms and
//! the TLS files, as one value every connection is opened with.
//!
//! The names follow Kafka's client settings (`security.protocol`,
//! `sasl.mechanism`), so a user who knows one Kafka client knows these.
//! SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) is pure Rust through `rsasl`,
//! the crate rskafka uses too. TLS brings C through `ring`, so it is a cargo
//! feature (`tls`): a build without it refuses SSL and SASL_SSL when the
//! configuration is read, not at the first connection.
//!
//! A password is a [`Password`]: it prints as `***` in every `Debug` and
//! `Display`, so no log line, error or configuration print can show it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Whether this build can speak TLS (the `tls` cargo feature).
pub const TLS_BUILT_IN: bool = cfg!(feature = "tls");

/// Kafka's `security.protocol`: what a connection does before its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// Neither authentication nor encryption.
    #[default]
    Plaintext,
    /// SASL authentication over a plain TCP connection.
    SaslPlaintext,
    /// TLS encryption (and client certificates, when given).
    Ssl,
    /// SASL authentication inside TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Every protocol, as Kafka names them.
    pub const NAMES: &'static str = "PLAINTEXT, SASL_PLAINTEXT, SSL, SASL_SSL";

    /// Whether connections are TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether connections authenticate with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl FromStr for SecurityProtocol {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(()),
        }
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        })
    }
}

/// Kafka's `sasl.mechanism`, for the mechanisms this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaslMechanism {
    /// Salted challenge and response with SHA-512: the password never crosses the wire.
    #[default]
    ScramSha512,
    /// The same with SHA-256.
    ScramSha256,
    /// The password itself, sent to the broker: only inside TLS.
    Plain,
}

impl SaslMechanism {
    /// Every mechanism, as Kafka names them.
    pub const NAMES: &'static str = "SCRAM-SHA-512, SCRAM-SHA-256, PLAIN";

    /// The mechanism's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::Plain => "PLAIN",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_uppercase().as_str() {
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "PLAIN" => Ok(SaslMechanism::Plain),
            _ => Err(()),
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A secret that never prints: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Password(secret.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The PEM files TLS is set up from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// Certificates of the authorities the brokers' certificates must chain
    /// to; unset, the system's (`/etc/ssl/certs`).
    pub ca: Option<PathBuf>,
    /// The client's own certificate chain, for brokers that ask for one.
    pub certificate: Option<PathBuf>,
    /// The private key of that certificate.
    pub key: Option<PathBuf>,
}

/// Everything a connection needs besides the broker's address.
#[derive(Clone, Default)]
pub struct Security {
    /// Kafka's `security.protocol`.
    pub protocol: SecurityProtocol,
    /// Kafka's `sasl.mechanism`, when the protocol uses SASL.
    pub mechanism: SaslMechanism,
    /// The SASL user (Kafka's principal is `User:<username>`).
    pub username: Option<String>,
    /// The SASL user's password.
    pub password: Option<Password>,
    /// A file holding the password, read by [`Security::prepare`] when no
    /// password is given (a mounted secret).
    pub password_file: Option<PathBuf>,
    /// The TLS files, read when the protocol uses TLS.
    pub tls_files: TlsFiles,
    /// The TLS client set up from [`Security::tls_files`] by [`Security::prepare`].
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl PartialEq for Security {
    fn eq(&self, other: &Self) -> bool {
        self.protocol == other.protocol
            && self.mechanism == other.mechanism
            && self.username == other.username
            && self.password == other.password
            && self.password_file == other.password_file
            && self.tls_files == other.tls_files
    }
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("protocol", &self.protocol)
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("tls_files", &self.tls_files)
            .finish()
    }
}

/// Why the security settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// SSL or SASL_SSL in a build without the `tls` feature.
    #[error(
        "{0} needs TLS, which this build leaves out: build with `cargo build --features tls`, or use PLAINTEXT or SASL_PLAINTEXT"
    )]
    NoTls(SecurityProtocol),
    /// A SASL protocol with no user or password.
    #[error("{protocol} needs a SASL {missing}")]
    MissingCredential {
        /// The protocol asked for.
        protocol: SecurityProtocol,
        /// `username` or `password`.
        missing: &'static str,
    },
    /// A password file, or a TLS file, that cannot be read or used.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
}

impl Security {
    /// Plaintext, unauthenticated: Kafka's default.
    pub fn plaintext() -> Arc<Security> {
        Arc::new(Security::default())
    }

    /// Checks the settings and sets up TLS from its files, once, so that a
    /// bad file is reported when the configuration is read.
    pub fn prepare(mut self) -> Result<Security, SecurityError> {
        if self.protocol.uses_tls() && !TLS_BUILT_IN {
            return Err(SecurityError::NoTls(self.protocol));
        }
        if self.protocol.uses_sasl() {
            if self.username.as_deref().is_none_or(str::is_empty) {
                return Err(SecurityError::MissingCredential {
                    protocol: self.protocol,
                    missing: "username",
                });
            }
            if self.password.is_none()
                && let Some(path) = &self.password_file
            {
                let text = std::fs::read_to_string(path).map_err(|e| SecurityError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                self.password = Some(Password::new(text.trim_end_matches(['\r', '\n'])));
            }
            if self.password.is_none() {
                return Err(SecurityError::MissingCredential {
                    protocol: self.protocol,
                    missing: "password",
                });
            }
        }
        #[cfg(feature = "tls")]
        if self.protocol.uses_tls() {
            let files = &self.tls_files;
            let config = crate::kafka::tls::client_config(
                files.ca.as_deref(),
                files.certificate.as_deref(),
                files.key.as_deref(),
            )
            .map_err(|e| SecurityError::File {
                path: e.path,
                reason: e.reason,
            })?;
            self.tls = Some(config);
        }
        Ok(self)
    }

    /// `SASL_SSL as producer (SCRAM-SHA-512)`, for log lines: never the password.
    pub fn describe(&self) -> String {
        match &self.username {
            Some(user) if self.protocol.uses_sasl() => {
                format!("{} as {user} ({})", self.protocol, self.mechanism)
            }
            _ => self.protocol.to_string(),
        }
    }
}

/// The brokers to bootstrap from, and how to reach them.
#[derive(Debug, Clone)]
pub struct Brokers {
    /// `host:port` of each bootstrap broker.
    pub addresses: Vec<String>,
    /// How every connection to them is opened.
    pub security: Arc<Security>,
}

impl Brokers {
    /// `addresses`, reached with `security`.
    pub fn new(addresses: Vec<String>, security: Arc<Security>) -> Self {
        Brokers {
            addresses,
            security,
        }
    }
}

/// Plaintext brokers, as Kafka's clients reach them by default.
impl From<Vec<String>> for Brokers {
    fn from(addresses: Vec<String>) -> Self {
        Brokers::new(addresses, Security::plaintext())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_and_mechanisms_read_as_kafka_names_them() {
        assert_eq!(
            "sasl_ssl".parse::<SecurityProtocol>(),
            Ok(SecurityProtocol::SaslSsl)
        );
        assert_eq!(
            "SASL_PLAINTEXT".parse::<SecurityProtocol>(),
            Ok(SecurityProtocol::SaslPlaintext)
        );
        assert!("TLS".parse::<SecurityProtocol>().is_err());
        assert_eq!(
            "scram-sha-256".parse::<SaslMechanism>(),
            Ok(SaslMechanism::ScramSha256)
        );
        assert!("GSSAPI".parse::<SaslMechanism>().is_err());
        for protocol in SecurityProtocol::NAMES.split(", ") {
            let parsed: SecurityProtocol = protocol.parse().unwrap();
            assert_eq!(parsed.to_string(), protocol);
        }
    }

    #[test]
    fn a_password_never_prints() {
        let security = Security {
            protocol: SecurityProtocol::SaslPlaintext,
            username: Some("producer".into()),
            password: Some(Password::new("s3cret-value")),
            ..Security::default()
        };
        let shown = format!(
            "{security:?} {} {}",
            security.describe(),
            Password::new("s3cret-value")
        );
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(
            shown.contains("SASL_PLAINTEXT as producer (SCRAM-SHA-512)"),
            "{shown}"
        );
    }

    #[test]
    #[cfg(not(feature = "tls"))]
    fn tls_is_refused_by_a_build_without_it() {
        let ssl = Security {
            protocol: SecurityProtocol::Ssl,
            ..Security::default()
        };
        let error = ssl.prepare().unwrap_err();
        assert_eq!(error, SecurityError::NoTls(SecurityProtocol::Ssl));
        assert!(error.to_string().contains("--features tls"), "{error}");
    }

    #[test]
    fn sasl_needs_a_user_and_a_password_which_may_come_from_a_file() {
        let sasl = |username: Option<&str>| Security {
            protocol: SecurityProtocol::SaslPlaintext,
            username: username.map(str::to_string),
            ..Security::default()
        };
        assert!(matches!(
            sasl(None).prepare(),
            Err(SecurityError::MissingCredential {
                missing: "username",
                ..
            })
        ));
        assert!(matches!(
            sasl(Some("consumer")).prepare(),
            Err(SecurityError::MissingCredential {
                missing: "password",
                ..
            })
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let prepared = Security {
            password_file: Some(file.clone()),
            ..sasl(Some("consumer"))
        }
        .prepare()
        .unwrap();
        assert_eq!(prepared.password.unwrap().expose(), "from-a-file");
        let missing = Security {
            password_file: Some(dir.path().join("absent")),
            ..sasl(Some("consumer"))
        }
        .prepare()
        .unwrap_err()
        .to_string();
        assert!(missing.contains("absent"), "{missing}");
    }
}
