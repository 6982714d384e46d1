//! Checks that look at several settings together, made once every one is read.

use super::{Config, ConfigError};
use crate::kafka::security::{Security, SecurityError};

/// The security settings, checked and ready to use, or the variable at fault.
pub(super) fn security(config: &Config) -> Result<Security, ConfigError> {
    let security = &config.security;
    let protocol = security.protocol.to_string();
    security.clone().prepare().map_err(|error| match error {
        SecurityError::NoTls(_) => ConfigError::Invalid {
            variable: "KAFKA_SECURITY_PROTOCOL",
            value: protocol,
            allowed: "PLAINTEXT or SASL_PLAINTEXT: this build leaves TLS out (SSL and SASL_SSL need a build with `--features tls`)".to_string(),
        },
        SecurityError::MissingCredential { missing, .. } => ConfigError::Invalid {
            variable: if missing == "username" {
                "KAFKA_SASL_USERNAME"
            } else {
                "KAFKA_SASL_PASSWORD"
            },
            value: String::new(),
            allowed: format!(
                "a SASL {missing}{}, since KAFKA_SECURITY_PROTOCOL={protocol}",
                if missing == "password" { " (or KAFKA_SASL_PASSWORD_FILE)" } else { "" }
            ),
        },
        SecurityError::File { path, reason } => {
            let files = [
                ("KAFKA_SASL_PASSWORD_FILE", &security.password_file),
                ("KAFKA_SSL_CA_LOCATION", &security.tls_files.ca),
                ("KAFKA_SSL_CERTIFICATE_LOCATION", &security.tls_files.certificate),
                ("KAFKA_SSL_KEY_LOCATION", &security.tls_files.key),
            ];
            let variable = files
                .iter()
                .find(|(_, file)| file.as_ref().is_some_and(|f| f.display().to_string() == path))
                .map_or("KAFKA_SSL_CA_LOCATION", |(name, _)| *name);
            ConfigError::Invalid {
                variable,
                value: path,
                allowed: format!("a file that can be used: {reason}"),
            }
        }
    })
}

/// HTTPS for the console needs both files, and a build with TLS.
pub(super) fn console_tls(config: &Config) -> Result<(), ConfigError> {
    let invalid = |variable, allowed: &str| ConfigError::Invalid {
        variable,
        value: String::new(),
        allowed: allowed.to_string(),
    };
    match (&config.console_tls_cert, &config.console_tls_key) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(invalid(
            "METROCLOUD_CONSOLE_TLS_KEY",
            "the key of METROCLOUD_CONSOLE_TLS_CERT",
        )),
        (None, Some(_)) => Err(invalid(
            "METROCLOUD_CONSOLE_TLS_CERT",
            "the certificate of METROCLOUD_CONSOLE_TLS_KEY",
        )),
        (Some(_), Some(_)) if !crate::kafka::security::TLS_BUILT_IN => Err(invalid(
            "METROCLOUD_CONSOLE_TLS_CERT",
            "no value: this build leaves TLS out (HTTPS for the console needs a build with `--features tls`)",
        )),
        (Some(_), Some(_)) => Ok(()),
    }
}
