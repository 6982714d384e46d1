//! The secure cluster's CA and broker certificate, made with the JDK's `keytool`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{ca_file, keystore, keystore_password_file, read_password};
use crate::cluster::ClusterError;
use crate::cluster::distribution::KafkaDistribution;

/// A CA, then one broker certificate signed by it for `localhost` and
/// 127.0.0.1 (every node listens there), in a PKCS12 keystore.
pub(super) fn make(dir: &Path, distribution: &KafkaDistribution) -> Result<(), ClusterError> {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).map_err(|e| ClusterError::io(&tls, e))?;
    let password = read_password(&keystore_password_file(dir))?;
    let keytool = distribution
        .java()
        .parent()
        .map(|bin| bin.join("keytool"))
        .unwrap_or_else(|| PathBuf::from("keytool"));
    let ca_store = tls.join("ca.p12");
    let request = tls.join("broker.csr");
    let signed = tls.join("broker.pem");
    let store = |path: &Path| -> Vec<String> {
        vec![
            "-keystore".into(),
            path.display().to_string(),
            "-storetype".into(),
            "PKCS12".into(),
            "-storepass".into(),
            password.clone(),
        ]
    };
    let key = |alias: &str, name: &str| -> Vec<String> {
        [
            "-genkeypair",
            "-alias",
            alias,
            "-keyalg",
            "EC",
            "-groupname",
            "secp256r1",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "-dname".to_string(),
            name.to_string(),
            "-validity".into(),
            "3650".into(),
        ])
        .collect()
    };
    let steps: Vec<Vec<String>> = vec![
        [
            key("ca", "CN=MetroCloud local cluster CA"),
            vec!["-ext".into(), "bc:c".into()],
            store(&ca_store),
        ]
        .concat(),
        [
            vec![
                "-exportcert".into(),
                "-rfc".into(),
                "-alias".into(),
                "ca".into(),
            ],
            vec!["-file".into(), ca_file(dir).display().to_string()],
            store(&ca_store),
        ]
        .concat(),
        [key("broker", "CN=localhost"), store(&keystore(dir))].concat(),
        [
            vec!["-certreq".into(), "-alias".into(), "broker".into()],
            vec!["-file".into(), request.display().to_string()],
            store(&keystore(dir)),
        ]
        .concat(),
        [
            vec![
                "-gencert".into(),
                "-rfc".into(),
                "-alias".into(),
                "ca".into(),
            ],
            vec!["-infile".into(), request.display().to_string()],
            vec!["-outfile".into(), signed.display().to_string()],
            vec!["-ext".into(), "SAN=dns:localhost,ip:127.0.0.1".into()],
            vec![
                "-ext".into(),
                "EKU=serverAuth".into(),
                "-validity".into(),
                "825".into(),
            ],
            store(&ca_store),
        ]
        .concat(),
        [
            vec![
                "-importcert".into(),
                "-noprompt".into(),
                "-alias".into(),
                "ca".into(),
            ],
            vec!["-file".into(), ca_file(dir).display().to_string()],
            store(&keystore(dir)),
        ]
        .concat(),
        [
            vec![
                "-importcert".into(),
                "-noprompt".into(),
                "-alias".into(),
                "broker".into(),
            ],
            vec!["-file".into(), signed.display().to_string()],
            store(&keystore(dir)),
        ]
        .concat(),
    ];
    for args in steps {
        let output = Command::new(&keytool)
            .args(&args)
            .output()
            .map_err(|e| ClusterError::io(&keytool, e))?;
        if !output.status.success() {
            let text = String::from_utf8_lossy(&output.stderr).replace(&password, "***");
            return Err(ClusterError::Mismatch(format!(
                "keytool {} failed: {}",
                args[0],
                text.trim()
            )));
        }
    }
    // The request and the signed certificate are in the keystore now; the
    // keystores hold private keys.
    for done in [&request, &signed] {
        std::fs::remove_file(done).map_err(|e| ClusterError::io(done, e))?;
    }
    for private in [&ca_store, &keystore(dir)] {
        std::fs::set_permissions(private, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| ClusterError::io(private, e))?;
    }
    Ok(())
}
