//! librdkafka, through `kcat`, as a second peer of the producer benchmark.
//!
//! librdkafka is the C client most non-Java users pick; `kcat` (Debian's
//! `kcat` package) is its command-line producer. `kcat -P -l <file>` sends
//! each line of a file as one record and exits once every record is
//! delivered or has failed, so a run is timed from start to exit, reading the
//! file included. It gets the settings ours and Kafka's Java producer get:
//! `acks=all`, the same linger, batch size, buffer and compression, and
//! idempotence on, as ours and the Java producer have it.
//!
//! Its input is a file of exactly the records to send: the benchmark's sensor
//! readings in turn, or records of the fixed size, one per line.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::BenchError;
use super::worker::Payload;
use crate::kafka::producer::ProducerSettings;

/// The `kcat` program on the `PATH`, if there is one.
pub fn find() -> Option<PathBuf> {
    crate::cluster::which("kcat")
}

/// `kcat` sending every line of `input` to `topic`.
pub fn producer(
    kcat: &Path,
    bootstrap: &str,
    topic: &str,
    input: &Path,
    settings: &ProducerSettings,
) -> Command {
    let mut command = Command::new(kcat);
    command
        .arg("-P")
        .args(["-b", bootstrap])
        .args(["-t", topic])
        .arg("-l")
        .arg(input);
    for (name, value) in properties(settings) {
        command.arg("-X").arg(format!("{name}={value}"));
    }
    command
}

/// librdkafka's names for the settings both sides share.
fn properties(settings: &ProducerSettings) -> Vec<(&'static str, String)> {
    vec![
        ("acks", "all".to_string()),
        ("enable.idempotence", "true".to_string()),
        ("linger.ms", settings.linger.as_millis().to_string()),
        ("batch.size", settings.batch_bytes.to_string()),
        (
            "queue.buffering.max.kbytes",
            (settings.buffer_bytes / 1024).max(1).to_string(),
        ),
        ("compression.codec", settings.compression.to_string()),
    ]
}

/// Writes `records` records of `payload` to `path`, one per line: the
/// readings file's lines in turn, or `size` printable bytes each.
pub fn write_input(path: &Path, payload: &Payload, records: u64) -> Result<(), BenchError> {
    let lines: Vec<Vec<u8>> = match payload {
        Payload::Readings(readings) => std::fs::read_to_string(readings)
            .map_err(|e| BenchError::io(readings, e))?
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes().to_vec())
            .collect(),
        Payload::Size(size) => (0..64u8)
            .map(|i| {
                (0..*size)
                    .map(|j| b'a' + ((i as usize * 7 + j) % 26) as u8)
                    .collect()
            })
            .collect(),
    };
    if lines.is_empty() {
        return Err(BenchError::Worker(format!(
            "no records to write into {}",
            path.display()
        )));
    }
    let file = std::fs::File::create(path).map_err(|e| BenchError::io(path, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    for line in lines.iter().cycle().take(records as usize) {
        out.write_all(line)
            .and_then(|_| out.write_all(b"\n"))
            .map_err(|e| BenchError::io(path, e))?;
    }
    out.flush().map_err(|e| BenchError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcat_gets_the_settings_ours_has() {
        let settings = ProducerSettings::default();
        let command = producer(
            Path::new("/usr/bin/kcat"),
            "127.0.0.1:9092",
            "t",
            Path::new("/tmp/in"),
            &settings,
        );
        let args: Vec<String> = command
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.starts_with("-P -b 127.0.0.1:9092 -t t -l /tmp/in"),
            "{joined}"
        );
        for expected in [
            "-X acks=all",
            "-X enable.idempotence=true",
            "-X linger.ms=5",
            "-X batch.size=524288",
            "-X queue.buffering.max.kbytes=32768",
            "-X compression.codec=none",
        ] {
            assert!(
                joined.contains(expected),
                "{expected} missing from {joined}"
            );
        }
    }

    #[test]
    fn the_input_holds_exactly_the_records_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let readings = dir.path().join("readings.jsonl");
        std::fs::write(&readings, "{\"a\":1}\n{\"b\":2}\n").unwrap();
        let input = dir.path().join("kcat.in");
        write_input(&input, &Payload::Readings(readings), 5).unwrap();
        let text = std::fs::read_to_string(&input).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "{\"a\":1}",
                "{\"b\":2}",
                "{\"a\":1}",
                "{\"b\":2}",
                "{\"a\":1}"
            ]
        );

        write_input(&input, &Payload::Size(100), 3).unwrap();
        let text = std::fs::read_to_string(&input).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().all(|l| l.len() == 100 && !l.contains('\n')));
    }
}
