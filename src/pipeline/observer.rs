//! What processing tells the rest of the program about each record.
//!
//! Processing reports every outcome as a [`ProcessingEvent`] to one observer:
//! the delivery audit of `metrocloud run`, the console's fleet view, and the
//! processed log of `metrocloud consume --processed-log` all listen here. The
//! processed log's line format is defined once, in [`ProcessedLine`], which
//! writes lines here and parses them in `metrocloud chaos`.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::sensor::reading::SensorReading;
use crate::sensor::rules::Alert;
use crate::sensor::validate::RejectReason;

/// What happened to one record.
#[derive(Debug, Clone)]
pub enum ProcessingEvent {
    /// A new valid reading.
    Reading {
        /// The reading.
        reading: SensorReading,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
    /// A repeat of a reading already processed.
    Duplicate {
        /// Device.
        device_id: String,
        /// Sequence.
        sequence: u64,
    },
    /// A record sent to the dead-letter sink.
    DeadLetter {
        /// Why.
        reason: RejectReason,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
    /// An alert sent.
    Alert(Alert),
}

/// Told about every processed record.
pub type ProcessingObserver = Arc<dyn Fn(&ProcessingEvent) + Send + Sync>;

/// One line of a processed log: `reading <device> <run> <sequence> <partition> <offset>`
/// or `duplicate <device> <sequence>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessedLine<'a> {
    /// A reading processed.
    Reading {
        /// Device.
        device_id: &'a str,
        /// Producer run.
        run_id: &'a str,
        /// Sequence in the run.
        sequence: u64,
        /// Partition it was read from.
        partition: i32,
        /// Offset it was read at.
        offset: i64,
    },
    /// A repeat removed.
    Duplicate {
        /// Device.
        device_id: &'a str,
        /// Sequence.
        sequence: u64,
    },
}

impl<'a> ProcessedLine<'a> {
    /// The line for an event, if the log records that kind.
    pub fn of(event: &'a ProcessingEvent) -> Option<Self> {
        match event {
            ProcessingEvent::Reading {
                reading,
                partition,
                offset,
            } => Some(ProcessedLine::Reading {
                device_id: &reading.device_id,
                run_id: &reading.run_id,
                sequence: reading.sequence,
                partition: *partition,
                offset: *offset,
            }),
            ProcessingEvent::Duplicate {
                device_id,
                sequence,
            } => Some(ProcessedLine::Duplicate {
                device_id,
                sequence: *sequence,
            }),
            _ => None,
        }
    }

    /// Reads one line (without its newline); `None` when it is not one.
    pub fn parse(line: &'a str) -> Option<Self> {
        if let Some(rest) = line.strip_prefix("reading ") {
            // Device ids come first and could hold spaces: read the rest from the right.
            let mut fields = rest.rsplitn(5, ' ');
            let offset = fields.next()?.parse().ok()?;
            let partition = fields.next()?.parse().ok()?;
            let sequence = fields.next()?.parse().ok()?;
            let run_id = fields.next()?;
            let device_id = fields.next()?;
            Some(ProcessedLine::Reading {
                device_id,
                run_id,
                sequence,
                partition,
                offset,
            })
        } else if let Some(rest) = line.strip_prefix("duplicate ") {
            let (device_id, sequence) = rest.rsplit_once(' ')?;
            Some(ProcessedLine::Duplicate {
                device_id,
                sequence: sequence.parse().ok()?,
            })
        } else {
            None
        }
    }
}

impl fmt::Display for ProcessedLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessedLine::Reading {
                device_id,
                run_id,
                sequence,
                partition,
                offset,
            } => write!(
                f,
                "reading {device_id} {run_id} {sequence} {partition} {offset}"
            ),
            ProcessedLine::Duplicate {
                device_id,
                sequence,
            } => write!(f, "duplicate {device_id} {sequence}"),
        }
    }
}

/// An observer appending each processed reading (and each removed repeat) to
/// the file at `path`, a line each, written at once so that it precedes the
/// offset commit. A failed write is logged once.
pub fn processed_log(path: &Path) -> std::io::Result<ProcessingObserver> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let file = Mutex::new(file);
    let path = path.to_path_buf();
    let failed_once = AtomicBool::new(false);
    Ok(Arc::new(move |event: &ProcessingEvent| {
        let Some(line) = ProcessedLine::of(event) else {
            return;
        };
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(file, "{line}")
            && !failed_once.swap(true, Ordering::Relaxed)
        {
            tracing::error!("cannot write the processed log {}: {e}", path.display());
        }
    }))
}

/// One observer that tells each of `observers` in turn.
pub fn fan_out(observers: Vec<ProcessingObserver>) -> Option<ProcessingObserver> {
    match observers.len() {
        0 => None,
        1 => observers.into_iter().next(),
        _ => Some(Arc::new(move |event: &ProcessingEvent| {
            for observer in &observers {
                observer(event);
            }
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_lines_read_back_as_written_even_with_spaces_in_a_device_id() {
        let lines = [
            ProcessedLine::Reading {
                device_id: "hall 7/temperature-000001",
                run_id: "r-1",
                sequence: 42,
                partition: 5,
                offset: 1_000_000,
            },
            ProcessedLine::Duplicate {
                device_id: "light-000009",
                sequence: 3,
            },
        ];
        for line in lines {
            let text = line.to_string();
            assert_eq!(ProcessedLine::parse(&text), Some(line), "{text}");
        }
        assert_eq!(ProcessedLine::parse("reading a b c 1 2"), None);
        assert_eq!(ProcessedLine::parse("alert x"), None);
    }
}
