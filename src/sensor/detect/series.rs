//! Offline scoring: a user's own history through the same detector.
//!
//! `metrocloud detect --csv FILE` reads `timestamp,value` rows (a header row
//! and a third `label` column are optional) and writes
//! `timestamp,value,anomaly_score` for every row, in order, through one
//! [`DeviceDetector`] with the settings the pipeline runs. With labels
//! (`1`/`true`/`yes` for a row inside an anomaly, `0`/`false`/`no`/empty
//! otherwise) it also judges the alerts the way the pipeline is judged: each
//! run of labelled rows is an episode, found when an alert is raised inside
//! it or within the quiet readings after it.

use std::io::{BufRead, Write};

use chrono::{DateTime, NaiveDateTime, Utc};

use super::{DetectorSettings, DeviceDetector};
use crate::sensor::fault::FaultKind;

/// What went wrong with a series.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// A row that is not `timestamp,value[,label]`.
    #[error("line {line}: {reason}")]
    Row { line: usize, reason: String },
    /// Reading the input or writing the scores failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What scoring a series found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesSummary {
    /// Rows scored.
    pub rows: u64,
    /// Rows with a score of 1.
    pub flagged: u64,
    /// Alerts raised, by kind.
    pub alerts: Vec<(DateTime<Utc>, FaultKind)>,
    /// With labels: anomalous episodes, those found, and alerts raised outside any.
    pub labelled: Option<LabelScore>,
}

/// How the alerts match the labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelScore {
    /// Runs of labelled rows.
    pub episodes: u64,
    /// Episodes with an alert inside them or just after.
    pub found: u64,
    /// Alerts raised away from every episode.
    pub false_alarms: u64,
}

/// Scores the rows of `input` into `output`; see the module documentation.
pub fn score_csv(
    input: impl BufRead,
    mut output: impl Write,
    settings: &DetectorSettings,
) -> Result<SeriesSummary, SeriesError> {
    let mut detector = DeviceDetector::new();
    let mut summary = SeriesSummary::default();
    let mut labels = Labels::default();
    let mut last: Option<DateTime<Utc>> = None;
    writeln!(output, "timestamp,value,anomaly_score")?;
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line?;
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let row = match parse_row(text) {
            Ok(row) => row,
            // A header: a first line that does not start with a time.
            Err(_)
                if index == 0
                    && timestamp(text.split(',').next().unwrap_or_default().trim()).is_err() =>
            {
                continue;
            }
            Err(reason) => {
                return Err(SeriesError::Row {
                    line: number,
                    reason,
                });
            }
        };
        if let Some(before) = last
            && row.at < before
        {
            return Err(SeriesError::Row {
                line: number,
                reason: format!(
                    "{} is earlier than the row before ({}): the rows must be in time order",
                    row.stamp, before
                ),
            });
        }
        last = Some(row.at);
        let verdict = detector.observe(row.at, row.value, settings);
        summary.rows += 1;
        if verdict.score >= 1.0 {
            summary.flagged += 1;
        }
        if let Some(kind) = verdict.raised {
            summary.alerts.push((row.at, kind));
        }
        if let Some(label) = row.label {
            labels.see(label, verdict.raised.is_some(), settings.quiet);
        }
        writeln!(output, "{},{},{:.4}", row.stamp, row.value, verdict.score)?;
    }
    output.flush()?;
    summary.labelled = labels.seen.then(|| labels.finish());
    Ok(summary)
}

struct Row<'a> {
    stamp: &'a str,
    at: DateTime<Utc>,
    value: f64,
    label: Option<bool>,
}

fn parse_row(text: &str) -> Result<Row<'_>, String> {
    let mut fields = text.split(',').map(str::trim);
    let stamp = fields.next().unwrap_or_default();
    let value = fields
        .next()
        .ok_or_else(|| format!("{text:?} has no value column: expected timestamp,value[,label]"))?;
    let label = fields.next();
    if fields.next().is_some() {
        return Err(format!(
            "{text:?} has more than three columns: expected timestamp,value[,label]"
        ));
    }
    let at = timestamp(stamp)?;
    let value: f64 = value
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("{value:?} is not a number"))?;
    let label = label.map(parse_label).transpose()?;
    Ok(Row {
        stamp,
        at,
        value,
        label,
    })
}

/// RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` (UTC), or seconds since the epoch
/// (milliseconds when the number is that large).
fn timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.to_utc());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(time.and_utc());
        }
    }
    if let Ok(number) = text.parse::<f64>()
        && number.is_finite()
    {
        let millis = if number.abs() >= 1e11 {
            number
        } else {
            number * 1000.0
        };
        if let Some(time) = DateTime::from_timestamp_millis(millis as i64) {
            return Ok(time);
        }
    }
    Err(format!(
        "{text:?} is not a time: give RFC 3339 (2026-06-01T12:00:00Z), 2026-06-01 12:00:00 (UTC) or seconds since 1970"
    ))
}

fn parse_label(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" | "" => Ok(false),
        _ => Err(format!(
            "{text:?} is not a label: give 1 or 0 (true/false, yes/no)"
        )),
    }
}

/// Matches alerts with runs of labelled rows as they go by.
#[derive(Default)]
struct Labels {
    seen: bool,
    score: LabelScore,
    inside: bool,
    found_current: bool,
    /// Rows since the last episode ended (an alert this soon still belongs to it).
    since_end: Option<u32>,
}

impl Labels {
    fn see(&mut self, anomalous: bool, alert: bool, grace: u32) {
        self.seen = true;
        if anomalous && !self.inside {
            self.inside = true;
            self.found_current = false;
            self.score.episodes += 1;
        } else if !anomalous && self.inside {
            self.inside = false;
            self.since_end = Some(0);
        }
        if !anomalous && let Some(since) = self.since_end.as_mut() {
            *since += 1;
        }
        if !alert {
            return;
        }
        let recent = !self.inside && self.since_end.is_some_and(|s| s <= grace + 3);
        if self.inside || recent {
            if !self.found_current {
                self.found_current = true;
                self.score.found += 1;
            }
        } else {
            self.score.false_alarms += 1;
        }
    }

    fn finish(self) -> LabelScore {
        self.score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(text: &str) -> (String, SeriesSummary) {
        let mut out = Vec::new();
        let summary = score_csv(text.as_bytes(), &mut out, &DetectorSettings::default()).unwrap();
        (String::from_utf8(out).unwrap(), summary)
    }

    /// A steady signal with a little deterministic noise, one row a minute.
    fn series(rows: usize, fault: impl Fn(usize) -> Option<f64>) -> String {
        let mut text = String::from("timestamp,value,label\n");
        for i in 0..rows {
            let noise = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
            let (value, label) = match fault(i) {
                Some(v) => (v, 1),
                None => (20.0 + 0.3 * noise, 0),
            };
            let at = DateTime::from_timestamp(1_780_000_000 + 60 * i as i64, 0).unwrap();
            text.push_str(&format!("{},{value:.2},{label}\n", at.to_rfc3339()));
        }
        text
    }

    #[test]
    fn every_row_gets_a_score_and_a_known_shift_and_spike_are_found() {
        let text = series(400, |i| match i {
            200 => Some(24.0),
            300..330 => Some(23.0),
            _ => None,
        });
        let (out, summary) = score(&text);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "timestamp,value,anomaly_score");
        assert_eq!(lines.len(), 401);
        assert_eq!(summary.rows, 400);
        for line in &lines[1..] {
            let score: f64 = line.rsplit(',').next().unwrap().parse().unwrap();
            assert!((0.0..=1.0).contains(&score), "{line}");
        }
        let kinds: Vec<FaultKind> = summary.alerts.iter().map(|(_, k)| *k).collect();
        assert_eq!(
            kinds,
            vec![FaultKind::Spike, FaultKind::LevelShift],
            "{summary:?}"
        );
        let labelled = summary.labelled.unwrap();
        assert_eq!(
            labelled,
            LabelScore {
                episodes: 2,
                found: 2,
                false_alarms: 0
            }
        );
        // The spike's row and the shift's rows score 1; the steady rows before, low.
        assert!(lines[201].ends_with(",1.0000"), "{}", lines[201]);
        assert!(lines[301].ends_with(",1.0000"), "{}", lines[301]);
        assert!(
            lines[150]
                .rsplit(',')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap()
                < 0.5
        );
    }

    #[test]
    fn unix_seconds_and_plain_times_are_read_and_a_header_is_optional() {
        let (out, summary) = score("1780000000,1.5\n1780000060,1.6\n2026-06-01 12:00:00,1.7\n");
        assert_eq!(summary.rows, 3);
        assert!(out.contains("\n1780000000,1.5,"), "{out}");
        assert!(summary.labelled.is_none());
    }

    #[test]
    fn a_bad_row_is_refused_with_its_line_number() {
        let mut out = Vec::new();
        let settings = DetectorSettings::default();
        let error = score_csv(
            "timestamp,value\n2026-06-01T00:00:00Z,1\n2026-06-01T00:01:00Z,warm\n".as_bytes(),
            &mut out,
            &settings,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(error, "line 3: \"warm\" is not a number");
        let error = score_csv(
            "2026-06-01T00:01:00Z,1\n2026-06-01T00:00:00Z,1\n".as_bytes(),
            &mut out,
            &settings,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("line 2: ") && error.contains("time order"),
            "{error}"
        );
        let error = score_csv(
            "2026-06-01T00:01:00Z,1,maybe\n".as_bytes(),
            &mut out,
            &settings,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("\"maybe\" is not a label"), "{error}");
    }
}
