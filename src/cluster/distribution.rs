//! The Apache Kafka jars, fetched once with Maven and cached.
//!
//! There is no Kafka tarball to download here: the broker and its tools are
//! ordinary Maven artifacts (`kafka_2.13`, `kafka-tools`). A generated
//! `pom.xml` asks Maven for them and their dependencies, plus Log4j 2's SLF4J
//! binding so the broker actually writes logs. The result lands in a cache
//! directory keyed by the Kafka version; later runs find it and start offline.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ClusterError;

/// The one Apache Kafka version MetroCloud runs, for clusters and tools alike.
pub const KAFKA_VERSION: &str = "4.1.1";
/// Log4j 2's SLF4J 1.x binding, matching the `slf4j-api` 1.7 and `log4j-core` 2.24 Kafka brings.
const LOG4J_SLF4J_BINDING: (&str, &str, &str) =
    ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3");

const BROKER_LOG_CONFIG: &str = "\
# Broker logs: rolled files in the node's log directory, so a failed node can be read.
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 4
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = warn
";

const TOOLS_LOG_CONFIG: &str = "\
# Command-line tools: warnings and errors only, on standard error.
status = warn
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
";

/// The cached jars of one Kafka version, ready to put on a classpath.
#[derive(Debug, Clone)]
pub struct KafkaDistribution {
    root: PathBuf,
    java: PathBuf,
    /// The class-data archive of this Java build and these jars (see
    /// [`archive`](super::archive)); it may not exist yet.
    class_archive: PathBuf,
}

impl KafkaDistribution {
    /// The cache directory: the one configured (`METROCLOUD_KAFKA_CACHE`), else
    /// `$XDG_CACHE_HOME/metrocloud`, else `~/.cache/metrocloud`.
    pub fn cache_dir(configured: Option<&Path>) -> PathBuf {
        if let Some(dir) = configured {
            return dir.to_path_buf();
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("metrocloud")
    }

    /// Finds Java, then the cached jars, fetching them with Maven on first use.
    pub fn ensure(cache_dir: &Path) -> Result<Self, ClusterError> {
        let (java, java_build) = find_java()?;
        let root = cache_dir.join(format!("kafka-{KAFKA_VERSION}"));
        let distribution = KafkaDistribution {
            class_archive: class_archive_path(&root, &java, &java_build),
            root,
            java,
        };
        if !distribution.root.join("libs/.complete").exists() {
            // Archives of other jars would be refused by Java, in silence.
            let _ = std::fs::remove_dir_all(distribution.root.join(CLASS_ARCHIVES));
            distribution.fetch()?;
        }
        distribution.write_log_configs()?;
        Ok(distribution)
    }

    /// Where the jars are.
    pub fn libs_dir(&self) -> PathBuf {
        self.root.join("libs")
    }

    /// The `java` executable in use.
    pub fn java(&self) -> &Path {
        &self.java
    }

    /// Where the class-data archive of this Java build and these jars is
    /// (see [`archive`](super::archive)); it may not exist yet.
    pub fn class_archive(&self) -> &Path {
        &self.class_archive
    }

    /// A `java` command with the Kafka jars on its classpath, logging as
    /// `log_config` says, and mapping the class-data archive when there is one.
    pub fn java_command(&self, log_config: LogConfig) -> Command {
        let mut command = Command::new(&self.java);
        if self.class_archive.is_file() {
            let mut flag = OsString::from("-XX:SharedArchiveFile=");
            flag.push(&self.class_archive);
            // An archive Java cannot use is skipped; its warning would only
            // clutter the output of Kafka's tools.
            command.arg(flag).arg("-Xlog:cds*=off");
        }
        let mut classpath = OsString::from(self.libs_dir());
        classpath.push("/*");
        let config_file = self.root.join(match log_config {
            LogConfig::Broker => "log4j2-broker.properties",
            LogConfig::Tools => "log4j2-tools.properties",
        });
        let mut log_flag = OsString::from("-Dlog4j2.configurationFile=");
        log_flag.push(config_file);
        command
            .arg("-Djava.awt.headless=true")
            .arg(log_flag)
            .arg("-cp")
            .arg(classpath);
        command
    }

    fn write_log_configs(&self) -> Result<(), ClusterError> {
        for (name, text) in [
            ("log4j2-broker.properties", BROKER_LOG_CONFIG),
            ("log4j2-tools.properties", TOOLS_LOG_CONFIG),
        ] {
            let path = self.root.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
                std::fs::write(&path, text).map_err(|e| ClusterError::io(&path, e))?;
            }
        }
        Ok(())
    }

    fn fetch(&self) -> Result<(), ClusterError> {
        let mvn = which("mvn").ok_or(ClusterError::MavenMissing)?;
        let staging = self.root.join(format!("fetch-{}", std::process::id()));
        std::fs::create_dir_all(&staging).map_err(|e| ClusterError::io(&staging, e))?;
        let pom = staging.join("pom.xml");
        std::fs::write(&pom, pom_xml()).map_err(|e| ClusterError::io(&pom, e))?;
        let libs = staging.join("libs");
        tracing::info!(
            "fetching Apache Kafka {KAFKA_VERSION} jars with Maven into {} (first use only, about 60 MB)",
            self.libs_dir().display()
        );
        let output = Command::new(mvn)
            .args([
                "-q",
                "-B",
                "-Dstyle.color=never",
                "dependency:copy-dependencies",
            ])
            .arg(format!("-DoutputDirectory={}", libs.display()))
            .arg("-f")
            .arg(&pom)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ClusterError::io(Path::new("mvn"), e))?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            let _ = std::fs::remove_dir_all(&staging);
            return Err(ClusterError::FetchFailed {
                version: KAFKA_VERSION.to_string(),
                output: last_lines(&text, 15),
            });
        }
        std::fs::write(libs.join(".complete"), KAFKA_VERSION)
            .map_err(|e| ClusterError::io(&libs, e))?;
        let target = self.libs_dir();
        // Another process may have finished the same fetch meanwhile: its copy is
        // complete and possibly in use, so keep it and drop ours.
        let complete = |dir: &Path| dir.join(".complete").exists();
        if !complete(&target) {
            if target.exists() {
                std::fs::remove_dir_all(&target).map_err(|e| ClusterError::io(&target, e))?;
            }
            if let Err(e) = std::fs::rename(&libs, &target)
                && !complete(&target)
            {
                return Err(ClusterError::io(&target, e));
            }
        }
        let _ = std::fs::remove_dir_all(&staging);
        tracing::info!("Kafka {KAFKA_VERSION} jars cached in {}", target.display());
        Ok(())
    }
}

/// Which logging a JVM gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogConfig {
    /// A broker: rolled files under `-Dkafka.logs.dir`.
    Broker,
    /// A command-line tool: warnings on standard error.
    Tools,
}

fn pom_xml() -> String {
    let (binding_group, binding_artifact, binding_version) = LOG4J_SLF4J_BINDING;
    format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>metrocloud.local</groupId>
  <artifactId>kafka-distribution</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>{binding_group}</groupId><artifactId>{binding_artifact}</artifactId><version>{binding_version}</version></dependency>
  </dependencies>
</project>
"#
    )
}

/// Java from `JAVA_HOME`, else from `PATH`, and the first line of its
/// `java -version`; it must be 17 or newer.
fn find_java() -> Result<(PathBuf, String), ClusterError> {
    let java = std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|p| p.is_file())
        .or_else(|| which("java"))
        .ok_or(ClusterError::JavaMissing)?;
    let output = Command::new(&java)
        .arg("-version")
        .stdin(Stdio::null())
        .output()
        .map_err(|_| ClusterError::JavaMissing)?;
    let text = String::from_utf8_lossy(&output.stderr);
    let major = java_major_version(&text).ok_or(ClusterError::JavaMissing)?;
    if major < 17 {
        return Err(ClusterError::JavaTooOld { path: java, major });
    }
    let build = text.lines().next().unwrap_or_default().trim().to_string();
    Ok((java, build))
}

/// The directory of the class-data archives, in a Kafka version's cache.
const CLASS_ARCHIVES: &str = "class-archives";

/// `class-archives/<java build>-<hash of the java path>.jsa` under `root`.
fn class_archive_path(root: &Path, java: &Path, java_build: &str) -> PathBuf {
    let build = java_build
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let java = java.canonicalize().unwrap_or_else(|_| java.to_path_buf());
    root.join(CLASS_ARCHIVES).join(format!(
        "{build}-{:016x}.jsa",
        fnv1a(java.as_os_str().as_encoded_bytes())
    ))
}

/// The 64-bit FNV-1a hash of `bytes`: stable across builds, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The major version in `java -version` output (`"17.0.15"` -> 17, `"1.8.0"` -> 8).
fn java_major_version(text: &str) -> Option<u32> {
    let quoted = text.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '-', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

/// The first executable called `name` on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The last `n` lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_versions_are_read_in_both_numbering_schemes() {
        assert_eq!(
            java_major_version("openjdk version \"17.0.15\" 2025-04-15"),
            Some(17)
        );
        assert_eq!(java_major_version("java version \"1.8.0_392\""), Some(8));
        assert_eq!(
            java_major_version("openjdk version \"25\" 2025-09-16"),
            Some(25)
        );
        assert_eq!(java_major_version("garbage"), None);
    }

    #[test]
    fn each_java_build_has_a_class_archive_of_its_own() {
        let archive_of = |java: &str, build: &str| {
            class_archive_path(Path::new("/cache/kafka"), Path::new(java), build)
        };
        let archive = archive_of(
            "/no/jdk17/bin/java",
            "openjdk version \"17.0.15\" 2025-04-15",
        );
        assert_eq!(
            archive.parent(),
            Some(Path::new("/cache/kafka/class-archives"))
        );
        let name = archive.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("openjdk-version-17.0.15-2025-04-15-"),
            "{name}"
        );
        assert!(name.ends_with(".jsa"), "{name}");
        let jdk25 = archive_of(
            "/no/jdk17/bin/java",
            "openjdk version \"25.0.3\" 2026-04-21 LTS",
        );
        assert_ne!(jdk25, archive);
        let elsewhere = archive_of(
            "/no/other/bin/java",
            "openjdk version \"17.0.15\" 2025-04-15",
        );
        assert_ne!(elsewhere, archive);
    }
}
