//! TLS for Kafka connections (the `tls` feature): rustls with `ring`, set up
//! once from PEM files, shared by our own connections and rskafka's.
//!
//! The brokers' certificates must chain to the authorities in
//! `KAFKA_SSL_CA_LOCATION` (or the system's when it is unset) and name the
//! host the client dialled; a client certificate is sent when one is given.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A file that cannot be used, and why.
#[derive(Debug)]
pub struct FileError {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> FileError {
    FileError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certificates.is_empty() {
        return Err(file_error(path, "holds no PEM certificate"));
    }
    Ok(certificates)
}

/// The TLS client trusting the authorities in `ca` (the system's when
/// `None`), with a client certificate when `certificate` and `key` are given.
pub fn client_config(
    ca: Option<&Path>,
    certificate: Option<&Path>,
    key: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, FileError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for certificate in certificates(path)? {
                roots.add(certificate).map_err(|e| file_error(path, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(file_error(
                    Path::new("/etc/ssl/certs"),
                    "no system certificates: set KAFKA_SSL_CA_LOCATION to the brokers' CA file",
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error(Path::new("(TLS versions)"), e))?
        .with_root_certificates(roots);
    let config = match (certificate, key) {
        (Some(certificate), Some(key)) => {
            let chain = certificates(certificate)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| file_error(certificate, e))?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(certificate), None) => {
            return Err(file_error(
                certificate,
                "a client certificate needs its key (KAFKA_SSL_KEY_LOCATION)",
            ));
        }
        (None, Some(key)) => {
            return Err(file_error(
                key,
                "a client key needs its certificate (KAFKA_SSL_CERTIFICATE_LOCATION)",
            ));
        }
    };
    Ok(Arc::new(config))
}

/// The name the broker's certificate must hold: the host of `address`.
pub fn server_name(address: &str) -> Result<ServerName<'static>, String> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))
}

/// A failed handshake in words a user can act on.
pub fn explain(error: &std::io::Error) -> String {
    let text = error.to_string();
    if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        format!(
            "{text}: the broker's certificate is not signed by an authority in KAFKA_SSL_CA_LOCATION"
        )
    } else if text.contains("NotValidForName") {
        format!("{text}: the broker's certificate does not name the host dialled")
    } else if text.contains("corrupt message")
        || text.contains("InvalidContentType")
        || text.contains("handshake eof")
    {
        format!(
            "{text}: the listener does not speak TLS; set KAFKA_SECURITY_PROTOCOL to PLAINTEXT or SASL_PLAINTEXT"
        )
    } else {
        text
    }
}
