//! The table `metrocloud chaos` prints: one row per scenario, then each
//! scenario's checks.

use std::time::Duration;

use super::ScenarioReport;

const HEADERS: [&str; 12] = [
    "scenario",
    "sent",
    "acked",
    "failed",
    "consumed",
    "lost",
    "not in topic",
    "dups removed",
    "re-read (bound)",
    "longest stall",
    "recovery",
    "verdict",
];

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// The scenarios' rows as an aligned text table, followed by their checks.
pub fn render_table(reports: &[ScenarioReport]) -> String {
    let rows: Vec<[String; 12]> = reports
        .iter()
        .map(|r| {
            [
                r.scenario.name().to_string(),
                r.sent.to_string(),
                r.acked.to_string(),
                r.failed.to_string(),
                r.consumed.to_string(),
                r.lost.to_string(),
                r.missing_from_topic.to_string(),
                r.duplicates_removed.to_string(),
                format!("{} ({})", r.reprocessed, r.duplicate_bound),
                seconds(r.longest_stall),
                r.recovery.map_or_else(|| "-".to_string(), seconds),
                if r.passed() { "PASS" } else { "FAIL" }.to_string(),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::from("|");
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            // Names left-aligned, numbers right-aligned.
            if i == 0 || i == cells.len() - 1 {
                text.push_str(&format!(" {cell:<width$} |"));
            } else {
                text.push_str(&format!(" {cell:>width$} |"));
            }
        }
        text.push('\n');
        text
    };
    let mut text = line(&HEADERS.map(str::to_string));
    text.push('|');
    for width in &widths {
        text.push_str(&format!("{}|", "-".repeat(width + 2)));
    }
    text.push('\n');
    for row in &rows {
        text.push_str(&line(row));
    }
    for report in reports {
        text.push_str(&format!(
            "\n{} ({:.0} s):\n",
            report.scenario.name(),
            report.elapsed.as_secs_f64()
        ));
        for check in &report.checks {
            let mark = if check.passed { "ok    " } else { "FAILED" };
            text.push_str(&format!("  {mark} {}\n", check.what));
        }
        if !report.passed() {
            text.push_str(&format!(
                "  logs and processed logs kept in {}\n",
                report.dir.display()
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::{Check, Scenario};

    fn clean() -> ScenarioReport {
        ScenarioReport {
            scenario: Scenario::TwoDown,
            sent: 1_000,
            acked: 990,
            failed: 10,
            consumed: 990,
            lost: 0,
            missing_from_topic: 0,
            duplicates_removed: 3,
            reprocessed: 40,
            duplicate_bound: 100,
            longest_stall: Duration::from_millis(15_250),
            recovery: Some(Duration::from_millis(2_500)),
            checks: vec![Check {
                what: "nothing acknowledged with two brokers down".to_string(),
                passed: true,
            }],
            elapsed: Duration::from_secs(60),
            dir: "/tmp/two-down".into(),
        }
    }

    #[test]
    fn a_clean_scenario_passes_and_its_row_shows_the_counts() {
        let report = clean();
        assert!(report.passed());
        let table = render_table(&[report]);
        let row = table.lines().nth(2).expect("a row under the header");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(
            cells[1..13],
            [
                "two-down", "1000", "990", "10", "990", "0", "0", "3", "40 (100)", "15.2 s",
                "2.5 s", "PASS"
            ]
        );
        assert!(table.contains("ok     nothing acknowledged"), "{table}");
        assert!(!table.contains("kept in"), "{table}");
    }

    #[test]
    fn one_lost_reading_fails_the_scenario() {
        let mut report = clean();
        report.lost = 1;
        assert!(!report.passed());
        let table = render_table(&[report]);
        assert!(table.contains("| FAIL"), "{table}");
        assert!(table.contains("kept in /tmp/two-down"), "{table}");
    }

    #[test]
    fn a_missing_record_too_many_repeats_or_a_failed_check_fail_it_too() {
        let mut missing = clean();
        missing.missing_from_topic = 1;
        let mut repeats = clean();
        repeats.reprocessed = 98;
        let mut check = clean();
        check.checks[0].passed = false;
        for report in [missing, repeats, check] {
            assert!(!report.passed(), "{report:?}");
        }
    }
}
