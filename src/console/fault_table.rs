//! The alerts page's table of the fault detector's quality per fault kind.

use maud::{Markup, html};

use crate::sensor::detect::quality::QualityLine;

/// One line per fault kind and one for all of them.
pub(super) fn fault_table(lines: &[QualityLine]) -> Markup {
    let delay = |d: Option<u64>| d.map_or("-".to_string(), |d| d.to_string());
    html! {
        p.quality { "The fault detector against the simulator's fault episodes (found: an alert between an episode's start and 8 readings after its end):" }
        table.faults {
            thead { tr { th { "Fault kind" } th.num { "Episodes" } th.num { "Found" } th.num { "Alerts" } th.num { "Precision" } th.num { "Recall" } th.num { "F1" } th.num { "Median delay (readings)" } } }
            tbody {
                @for line in lines {
                    tr data-fault=(line.kind) {
                        td { (line.kind) }
                        td.num { (line.episodes) }
                        td.num { (line.found) }
                        td.num { (line.alerts) }
                        td.num { (format!("{:.3}", line.precision)) }
                        td.num { (format!("{:.3}", line.recall)) }
                        td.num { (format!("{:.3}", line.f1)) }
                        td.num { (delay(line.median_delay_readings)) }
                    }
                }
            }
        }
    }
}
