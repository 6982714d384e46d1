//! Charts drawn on the server as inline SVG: a page with a chart needs no
//! script and no file from elsewhere, and a browser without scripts shows it.
//!
//! A chart is a time axis (UTC) and one value axis; each series is a line,
//! broken where minutes are missing, or bars. Its values are also in the
//! SVG's `<title>` and in the page's JSON, for readers that cannot see it.

use maud::{Markup, PreEscaped, html};

/// Drawing area, in SVG user units.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// Points further apart than this are not joined by a line.
const GAP_MS: i64 = 150_000;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A line through the points.
    Line,
    /// A bar per point, from zero.
    Bars,
}

/// One series: points of (Unix milliseconds, value).
#[derive(Debug, Clone)]
pub struct Series<'a> {
    /// What it shows, for the legend.
    pub label: &'a str,
    /// The CSS class that colours it.
    pub class: &'a str,
    /// How it is drawn.
    pub style: Style,
    /// Its points, oldest first.
    pub points: Vec<(i64, f64)>,
}

/// A chart over the time window `from_ms..to_ms`.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    /// Its heading, also the SVG's accessible name.
    pub title: &'a str,
    /// The unit of the value axis.
    pub unit: &'a str,
    /// Start of the window.
    pub from_ms: i64,
    /// End of the window.
    pub to_ms: i64,
    /// What is drawn.
    pub series: Vec<Series<'a>>,
}

/// `value` with few digits, for axis labels.
fn short(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if magnitude >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// The time of day, with the date when the window is longer than half a day.
fn clock(ms: i64, span_ms: i64) -> String {
    let format = if span_ms > 12 * 3_600_000 {
        "%b %d %H:%M"
    } else {
        "%H:%M"
    };
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format(format).to_string())
        .unwrap_or_default()
}

/// The chart as an `<svg>` element with a legend, or a line saying there is no data.
pub fn chart(chart: &Chart<'_>) -> Markup {
    let values = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1));
    let (mut low, mut high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !low.is_finite() {
        return html! { p.meta { (chart.title) ": nothing stored in this window yet." } };
    }
    if chart.series.iter().any(|s| s.style == Style::Bars) {
        low = low.min(0.0);
    }
    if high - low < 1e-9 {
        high += 1.0;
        low -= if low == 0.0 { 0.0 } else { 1.0 };
    }
    let span_ms = (chart.to_ms - chart.from_ms).max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |ms: i64| LEFT + (ms - chart.from_ms) as f64 / span_ms * plot_w;
    let y = |v: f64| TOP + (high - v) / (high - low) * plot_h;
    let bar_w = (plot_w / (span_ms / 60_000.0)).max(1.0);
    let mut drawn = String::new();
    for series in &chart.series {
        match series.style {
            Style::Line => {
                let mut path = String::new();
                let mut previous: Option<i64> = None;
                for &(ms, value) in &series.points {
                    let joined = previous.is_some_and(|p| ms - p <= GAP_MS);
                    path.push_str(&format!(
                        "{}{:.1},{:.1} ",
                        if joined { "L" } else { "M" },
                        x(ms),
                        y(value)
                    ));
                    previous = Some(ms);
                }
                drawn.push_str(&format!(
                    r#"<path class="{}" fill="none" d="{}"/>"#,
                    series.class,
                    path.trim_end()
                ));
            }
            Style::Bars => {
                for &(ms, value) in series.points.iter().filter(|p| p.1 != 0.0) {
                    let (top, bottom) = (y(value.max(0.0)), y(value.min(0.0)));
                    drawn.push_str(&format!(
                        r#"<rect class="{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/>"#,
                        series.class,
                        x(ms),
                        top,
                        bar_w,
                        (bottom - top).max(0.5)
                    ));
                }
            }
        }
    }
    let summary = chart
        .series
        .iter()
        .map(|s| format!("{}: {} points", s.label, s.points.len()))
        .collect::<Vec<_>>()
        .join("; ");
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(chart.title) {
                title { (chart.title) " (" (summary) ")" }
                line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(HEIGHT - BOTTOM) {}
                line.axis x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH - RIGHT) y2=(HEIGHT - BOTTOM) {}
                text x=(LEFT - 6.0) y=(TOP + 8.0) text-anchor="end" { (short(high)) " " (chart.unit) }
                text x=(LEFT - 6.0) y=(HEIGHT - BOTTOM) text-anchor="end" { (short(low)) }
                text x=(LEFT) y=(HEIGHT - 6.0) { (clock(chart.from_ms, chart.to_ms - chart.from_ms)) " UTC" }
                text x=(WIDTH - RIGHT) y=(HEIGHT - 6.0) text-anchor="end" { (clock(chart.to_ms, chart.to_ms - chart.from_ms)) }
                (PreEscaped(drawn))
            }
            figcaption {
                (chart.title)
                @for s in &chart.series { " · " span class=(s.class) { "■ " } (s.label) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(style: Style, points: Vec<(i64, f64)>) -> Series<'static> {
        Series {
            label: "mean",
            class: "mean",
            style,
            points,
        }
    }

    #[test]
    fn a_line_is_broken_where_minutes_are_missing_and_scaled_to_the_window() {
        let points = vec![(0, 1.0), (60_000, 3.0), (600_000, 2.0)];
        let svg = chart(&Chart {
            title: "Mean",
            unit: "°C",
            from_ms: 0,
            to_ms: 600_000,
            series: vec![series(Style::Line, points)],
        })
        .into_string();
        assert!(svg.starts_with("<figure class=\"chart\"><svg"), "{svg}");
        // The first point at the left edge and the lowest value; the third starts anew.
        assert!(
            svg.contains("d=\"M64.0,158.0 L128.8,10.0 M712.0,84.0\""),
            "{svg}"
        );
        assert!(
            svg.contains(">3 °C</text>") && svg.contains(">1</text>"),
            "{svg}"
        );
        assert!(svg.contains("Mean (mean: 3 points)"), "{svg}");
    }

    #[test]
    fn bars_start_at_zero_and_zero_values_draw_nothing() {
        let svg = chart(&Chart {
            title: "Anomalies",
            unit: "/min",
            from_ms: 0,
            to_ms: 120_000,
            series: vec![series(Style::Bars, vec![(0, 0.0), (60_000, 4.0)])],
        })
        .into_string();
        assert_eq!(svg.matches("<rect").count(), 1, "{svg}");
        assert!(svg.contains(">0</text>"), "{svg}");
    }

    #[test]
    fn a_day_long_axis_names_the_dates_and_an_hour_long_one_only_the_times() {
        let day = 24 * 3_600_000;
        assert_eq!(clock(day, day), "Jan 02 00:00");
        assert_eq!(clock(3_600_000, 3_600_000), "01:00");
    }

    #[test]
    fn no_points_is_said_in_words() {
        let markup = chart(&Chart {
            title: "Readings",
            unit: "/s",
            from_ms: 0,
            to_ms: 1,
            series: vec![series(Style::Line, Vec::new())],
        })
        .into_string();
        assert!(
            markup.contains("nothing stored in this window yet"),
            "{markup}"
        );
        assert!(!markup.contains("<svg"));
    }
}
