//! The end-to-end latencies as a picture: percentiles against offered rate,
//! ours beside Kafka's Java producer, as a self-contained SVG file.
//!
//! Latencies span three orders of magnitude from a quiet pipe to a loaded
//! one, so the vertical axis is logarithmic; offered rates are spaced evenly
//! in the order they were measured. Only rates both producers were offered
//! are drawn.

use std::fmt::Write;

use super::report::LatencySection;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 220.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// One line of the chart: a name, how it is drawn, and a value per rate.
struct Series {
    name: &'static str,
    colour: &'static str,
    dashed: bool,
    values: Vec<f64>,
}

/// The chart of `section`, or `None` when no rate was measured on both sides.
pub fn latency_svg(section: &LatencySection) -> Option<String> {
    let mut runs: Vec<_> = section
        .ours
        .iter()
        .filter_map(|run| run.peer_ack_ms.map(|peer| (run, peer)))
        .collect();
    runs.sort_by_key(|(run, _)| run.rate);
    runs.dedup_by_key(|(run, _)| run.rate);
    if runs.is_empty() {
        return None;
    }
    let series = [
        Series {
            name: "ours send→ack p50",
            colour: "#1b7837",
            dashed: false,
            values: runs.iter().map(|(r, _)| r.ack_p50_ms).collect(),
        },
        Series {
            name: "ours send→ack p99",
            colour: "#5aae61",
            dashed: false,
            values: runs.iter().map(|(r, _)| r.ack_p99_ms).collect(),
        },
        Series {
            name: "ours to processed p99",
            colour: "#a6dba0",
            dashed: false,
            values: runs.iter().map(|(r, _)| r.p99_ms).collect(),
        },
        Series {
            name: "Java send→ack p50",
            colour: "#762a83",
            dashed: true,
            values: runs.iter().map(|(_, p)| p.0).collect(),
        },
        Series {
            name: "Java send→ack p99",
            colour: "#c2a5cf",
            dashed: true,
            values: runs.iter().map(|(_, p)| p.1).collect(),
        },
    ];
    let rates: Vec<u32> = runs.iter().map(|(r, _)| r.rate).collect();
    Some(draw(&rates, &series))
}

/// Decades of milliseconds the axis covers: from the one below the smallest
/// value to the one above the largest.
fn decades(series: &[Series]) -> (i32, i32) {
    let positive = || {
        series
            .iter()
            .flat_map(|s| &s.values)
            .copied()
            .filter(|v| *v > 0.0)
    };
    let low = positive().fold(f64::INFINITY, f64::min);
    let high = positive().fold(0.0, f64::max);
    if !low.is_finite() {
        return (0, 1);
    }
    let low = low.log10().floor() as i32;
    let high = (high.log10().ceil() as i32).max(low + 1);
    (low, high)
}

fn draw(rates: &[u32], series: &[Series]) -> String {
    let (low, high) = decades(series);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |index: usize| {
        if rates.len() == 1 {
            LEFT + plot_width / 2.0
        } else {
            LEFT + plot_width * index as f64 / (rates.len() - 1) as f64
        }
    };
    // Values at or below zero sit on the axis's floor.
    let y = |ms: f64| {
        let exponent = if ms > 0.0 { ms.log10() } else { f64::from(low) };
        let share = (exponent - f64::from(low)) / f64::from(high - low);
        TOP + plot_height * (1.0 - share.clamp(0.0, 1.0))
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>
<text x="{LEFT}" y="22" font-size="14" font-weight="bold">Latency against offered rate (ms, log scale)</text>
"##
    );
    for decade in low..=high {
        let value = 10f64.powi(decade);
        let at = y(value);
        let label = if decade < 0 {
            format!("{value:.prec$}", prec = (-decade) as usize)
        } else {
            format!("{value:.0}")
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{at:.1}" x2="{:.1}" y2="{at:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + plot_width,
            LEFT - 8.0,
            at + 4.0
        );
    }
    for (index, rate) in rates.iter().enumerate() {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}/s</text>"##,
            x(index),
            TOP + plot_height + 20.0,
            thousands(*rate)
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered sensor readings per second</text>"##,
        LEFT + plot_width / 2.0,
        HEIGHT - 14.0
    );
    for (number, line) in series.iter().enumerate() {
        let points: Vec<String> = line
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let dash = if line.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"><title>{}</title></polyline>"##,
            line.colour,
            points.join(" "),
            line.name
        );
        let legend_y = TOP + 10.0 + 20.0 * number as f64;
        let legend_x = WIDTH - RIGHT + 16.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{legend_x:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"##,
            legend_x + 24.0,
            line.colour,
            legend_x + 30.0,
            legend_y + 4.0,
            line.name
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn thousands(value: u32) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::LatencyRun;

    fn run(rate: u32, ack_p50_ms: f64, ack_p99_ms: f64, peer: Option<(f64, f64)>) -> LatencyRun {
        LatencyRun {
            rate,
            achieved_rate: f64::from(rate),
            p50_ms: ack_p50_ms + 1.0,
            p99_ms: ack_p99_ms + 2.0,
            p999_ms: ack_p99_ms + 5.0,
            max_ms: ack_p99_ms + 9.0,
            ack_p50_ms,
            ack_p99_ms,
            peer_ack_ms: peer,
            behind_at_end: 0,
            lag_at_end: 0,
            sustained: true,
            processed: 1,
            cpu_secs: 1.0,
            peak_rss_mib: 10.0,
        }
    }

    /// The y coordinates of the polyline titled `name`.
    fn heights(svg: &str, name: &str) -> Vec<f64> {
        let line = svg
            .lines()
            .find(|l| l.starts_with("<polyline") && l.contains(&format!("<title>{name}</title>")))
            .unwrap_or_else(|| panic!("no line for {name}"));
        let points = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        points
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn each_rate_both_sides_ran_is_a_point_and_higher_latency_is_drawn_higher() {
        let section = LatencySection {
            record_bytes: 390,
            ours: vec![
                run(10_000, 3.0, 20.0, Some((9.0, 270.0))),
                run(1_000, 1.0, 4.0, Some((2.0, 30.0))),
                // Searching for the highest sustained rate: ours alone, not drawn.
                run(200_000, 50.0, 400.0, None),
            ],
            highest_sustained: Some(200_000),
            peer: None,
        };
        let svg = latency_svg(&section).expect("two rates on both sides");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 5);
        assert!(svg.contains(">1,000/s<") && svg.contains(">10,000/s<"));
        assert!(!svg.contains("200,000/s"));
        let ours = heights(&svg, "ours send→ack p50");
        let java = heights(&svg, "Java send→ack p99");
        assert_eq!((ours.len(), java.len()), (2, 2));
        // SVG's y grows downwards: more milliseconds, smaller y.
        assert!(
            ours[1] < ours[0],
            "10,000/s is slower than 1,000/s: {ours:?}"
        );
        assert!(java[1] < ours[1], "270 ms is drawn above 3 ms");
    }

    #[test]
    fn with_no_rate_measured_on_both_sides_there_is_no_chart() {
        let section = LatencySection {
            record_bytes: 390,
            ours: vec![run(1_000, 1.0, 4.0, None)],
            highest_sustained: None,
            peer: None,
        };
        assert!(latency_svg(&section).is_none());
    }
}
