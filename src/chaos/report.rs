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
