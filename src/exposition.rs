//! Prometheus' text format (version 0.0.4), written by hand: every metric
//! MetroCloud exposes is a counter or a gauge with a few labels, and each
//! part that exposes some (the console, the device gateway) writes into the
//! same text. Every name starts with `metrocloud_`; counters end in `_total`.

use std::fmt::Write;

/// A metrics page being written.
#[derive(Debug, Default)]
pub struct Exposition(String);

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Exposition::default()
    }

    /// A metric of `kind` (`counter`, `gauge`) with its help and one sample
    /// per label set (`{reason="x"}`, or empty).
    pub fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
        let _ = writeln!(self.0, "# HELP metrocloud_{name} {help}");
        let _ = writeln!(self.0, "# TYPE metrocloud_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(self.0, "metrocloud_{name}{labels} {value}");
        }
    }

    /// A counter without labels.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.metric(name, "counter", help, &[("", value as f64)]);
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.metric(name, "gauge", help, &[("", value)]);
    }

    /// A histogram without labels: each bucket's upper bound with the
    /// observations at or under it (cumulative), then their count and sum.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        let _ = writeln!(self.0, "# HELP metrocloud_{name} {help}");
        let _ = writeln!(self.0, "# TYPE metrocloud_{name} histogram");
        for (bound, cumulative) in buckets {
            let _ = writeln!(
                self.0,
                "metrocloud_{name}_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(self.0, "metrocloud_{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(self.0, "metrocloud_{name}_sum {sum}");
        let _ = writeln!(self.0, "metrocloud_{name}_count {count}");
    }

    /// The text.
    pub fn into_text(self) -> String {
        self.0
    }
}

/// A label value, escaped.
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
