//! The run's reports: a terminal table, a JSON file, an HTML page with plots.
//!
//! The HTML report is one self-contained file: inline CSS and inline SVG drawn by the small
//! plotting code in [`plot`], no script and nothing fetched from the network. All text that
//! came from outside (target, scenario name, violation lines, drop reasons) is escaped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::results::{CallEnd, Percentiles, RunReport, Summary};

/// Widest line of [`summary_table`], in characters.
pub const TABLE_WIDTH: usize = 100;

/// At most this many points are drawn in a scatter plot; more are thinned deterministically.
pub const MAX_SCATTER_POINTS: usize = 5000;

/// At most this many calls are listed in the HTML report's table of calls with problems.
pub const MAX_PROBLEM_ROWS: usize = 100;

/// The files written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// report.json
    pub json: PathBuf,
    /// report.html
    pub html: PathBuf,
}

/// Why reports could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A directory could not be created or a file not written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The report could not be encoded as JSON.
    #[error("cannot encode the JSON report for {path}: {source}")]
    Json {
        /// The file it was meant for.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// A latency figure in milliseconds as the reports print it: no decimals, or one below 10 ms.
pub fn fmt_ms(value: f64) -> String {
    if value.abs() < 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// Seconds as the reports print them: `30 s`, `2.5 s`.
fn fmt_secs(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0} s")
    } else {
        format!("{value:.1} s")
    }
}

/// An optional figure with its unit, or `—`.
fn fmt_opt(value: Option<f64>, decimals: usize, unit: &str) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$} {unit}"),
        _ => "—".to_string(),
    }
}

/// Text from outside made safe for a terminal: control characters become `?`.
fn terminal_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Cuts `text` to at most `width` characters, ending with `…` when cut.
fn clip_chars(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The latency rows of both tables: label and percentiles (`None`: not applicable to this run).
fn latency_rows(summary: &Summary) -> Vec<(&'static str, Option<Percentiles>)> {
    vec![
        ("response", Some(summary.response_ms)),
        ("voiced", Some(summary.voiced_ms)),
        ("response − fakes", summary.response_minus_fakes_ms),
        ("barge-in → clear", Some(summary.barge_clear_ms)),
        ("audio after clear", Some(summary.audio_after_clear_ms)),
        ("connect", Some(summary.connect_ms)),
        ("jitter", Some(summary.jitter_ms)),
        ("tick lateness", Some(summary.tick_late_ms)),
    ]
}

/// The cells n, p50, p95, p99, max of one latency row; `—` where there is nothing to show.
fn latency_cells(p: Option<Percentiles>) -> [String; 5] {
    match p {
        Some(p) if p.n > 0 => [
            p.n.to_string(),
            fmt_ms(p.p50),
            fmt_ms(p.p95),
            fmt_ms(p.p99),
            fmt_ms(p.max),
        ],
        Some(_) => [
            "0".to_string(),
            "—".to_string(),
            "—".to_string(),
            "—".to_string(),
            "—".to_string(),
        ],
        None => std::array::from_fn(|_| "—".to_string()),
    }
}

/// The fakes' delays in words.
fn fakes_line(report: &RunReport) -> String {
    match report.info.fake_delays {
        Some(d) => format!(
            "STT endpointing {} ms · LLM first token {} ms (+{} ms/token) · TTS first byte {} ms",
            d.stt_endpointing_ms, d.llm_first_token_ms, d.llm_token_ms, d.tts_first_byte_ms
        ),
        None => "—".to_string(),
    }
}

/// The count lines of both tables: label and text.
fn count_rows(s: &Summary) -> Vec<(&'static str, String)> {
    vec![
        (
            "calls",
            format!(
                "{} planned · {} connected · {} failed · {} dropped",
                s.calls, s.connected, s.failed, s.dropped
            ),
        ),
        (
            "turns",
            format!(
                "{} · {} answered · {} unanswered · {} overlapped",
                s.turns, s.answered, s.unanswered, s.overlapped
            ),
        ),
        (
            "barge-ins",
            format!("{} · {} missed", s.barge_ins, s.barge_missed),
        ),
        ("underruns", s.underruns.to_string()),
        ("violations", s.violations.to_string()),
        (
            "gateway CPU",
            format!(
                "{} mean · {} per call",
                fmt_opt(s.gateway_cpu_pct, 1, "%"),
                fmt_opt(s.gateway_cpu_pct_per_call, 2, "%")
            ),
        ),
        (
            "gateway RSS",
            format!(
                "{} peak · {} per call",
                fmt_opt(s.gateway_rss_peak_mib, 1, "MiB"),
                fmt_opt(s.gateway_rss_mib_per_call, 2, "MiB")
            ),
        ),
    ]
}

/// The summary as a terminal table, at most [`TABLE_WIDTH`] columns wide.
pub fn summary_table(report: &RunReport) -> String {
    let info = &report.info;
    let s = &report.summary;
    let mut lines: Vec<String> = Vec::new();
    lines.push(format!(
        "voicegw loadtest {} · started {}",
        terminal_safe(&info.version),
        terminal_safe(&info.started_at)
    ));
    let label = |name: &str, value: String| format!("{name:<14}{value}");
    lines.push(label("target", terminal_safe(&info.target)));
    lines.push(label(
        "carrier",
        format!(
            "{} · {} calls · ramp {} · duration {}",
            terminal_safe(&info.carrier),
            info.calls,
            fmt_secs(info.ramp_s),
            fmt_secs(info.duration_s)
        ),
    ));
    lines.push(label("scenario", terminal_safe(&info.scenario)));
    lines.push(label("fakes", fakes_line(report)));
    if let Some(dir) = &report.transcripts_dir {
        lines.push(label("transcripts", terminal_safe(dir)));
    }
    lines.push(String::new());
    lines.push(format!(
        "{:<20}{:>9}{:>9}{:>9}{:>9}{:>9}",
        "latency (ms)", "n", "p50", "p95", "p99", "max"
    ));
    for (name, p) in latency_rows(s) {
        let [n, p50, p95, p99, max] = latency_cells(p);
        lines.push(format!("{name:<20}{n:>9}{p50:>9}{p95:>9}{p99:>9}{max:>9}"));
    }
    lines.push(String::new());
    for (name, text) in count_rows(s) {
        lines.push(label(name, text));
        if name == "violations" {
            lines.extend(violation_kind_lines(s));
        }
    }
    let mut out = String::new();
    for line in lines {
        out.push_str(clip_chars(&line, TABLE_WIDTH).trim_end());
        out.push('\n');
    }
    out
}

/// The violation kinds, indented, several per line. They come from the gateway's messages:
/// sanitized and shortened.
fn violation_kind_lines(s: &Summary) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for (kind, count) in &s.violation_kinds {
        let item = format!("{} {count}", clip_chars(&terminal_safe(kind), 40));
        if !current.is_empty() && 16 + current.chars().count() + 3 + item.chars().count() > 96 {
            lines.push(format!("{:<16}{current}", ""));
            current.clear();
        }
        if !current.is_empty() {
            current.push_str(" · ");
        }
        current.push_str(&item);
    }
    if !current.is_empty() {
        lines.push(format!("{:<16}{current}", ""));
    }
    lines
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Every `stride`-th element so that at most `max` remain (first element always kept).
pub fn thin<T: Clone>(items: &[T], max: usize) -> Vec<T> {
    if max == 0 {
        return Vec::new();
    }
    if items.len() <= max {
        return items.to_vec();
    }
    let stride = items.len().div_ceil(max);
    items.iter().step_by(stride).cloned().collect()
}

/// Points of an empirical CDF (value, percent of samples ≤ value), at most `max` of them,
/// always ending at the largest sample.
pub fn cdf_points(samples: &[f64], max: usize) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() || max == 0 {
        return Vec::new();
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let steps = n.min(max);
    let mut out = Vec::with_capacity(steps);
    for k in 1..=steps {
        // The k-th of `steps` evenly spaced ranks (1-based); the last is n.
        let rank = (k * n).div_ceil(steps);
        out.push((sorted[rank - 1], rank as f64 * 100.0 / n as f64));
    }
    out
}

/// A histogram: bins of equal width from `start`; the last bin also holds everything above.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Left edge of the first bin.
    pub start: f64,
    /// Width of each bin.
    pub width: f64,
    /// Samples per bin, one list per input series.
    pub counts: Vec<Vec<u32>>,
    /// Samples of all series that fell beyond the last bin's right edge (counted in it).
    pub overflow: u32,
}

/// Bins the series on one shared grid of about `bins` round-width bins from the smallest
/// sample to the 99th percentile of all samples. `None` when there are no finite samples, or
/// their range is too wide to measure.
pub fn histogram(series: &[&[f64]], bins: usize) -> Option<Histogram> {
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    if all.is_empty() {
        return None;
    }
    let p = Percentiles::of(all.iter().copied());
    let min = all.iter().copied().fold(f64::INFINITY, f64::min);
    let top = if p.p99 > min { p.p99 } else { min + 1.0 };
    if !(top - min).is_finite() {
        return None;
    }
    let bins = bins.max(1);
    let width = plot::nice_step((top - min) / bins as f64);
    let start = (min / width).floor() * width;
    // In f64 first: a huge span saturates `as usize`, and `+ 1` on that would overflow.
    let count =
        ((((top - start) / width).floor() + 1.0).min((4 * bins + 2) as f64) as usize).max(1);
    let mut overflow = 0;
    let mut counts = vec![vec![0u32; count]; series.len()];
    for (i, s) in series.iter().enumerate() {
        for v in s.iter().copied().filter(|v| v.is_finite()) {
            let bin = ((v - start) / width).floor().max(0.0) as usize;
            if bin >= count {
                overflow += 1;
            }
            counts[i][bin.min(count - 1)] += 1;
        }
    }
    Some(Histogram {
        start,
        width,
        counts,
        overflow,
    })
}

/// Small SVG charts: nice axis ticks, lines, points, bars, steps, legend, markers.
pub mod plot {
    use std::fmt::Write as _;

    use super::escape;

    /// A round step (1, 2 or 5 × 10ⁿ) at least `raw`; 1 for non-positive or non-finite input.
    pub fn nice_step(raw: f64) -> f64 {
        if !raw.is_finite() || raw <= 0.0 {
            return 1.0;
        }
        let exponent = raw.log10().floor();
        let base = 10f64.powf(exponent);
        let fraction = raw / base;
        let nice = if fraction <= 1.0 + 1e-9 {
            1.0
        } else if fraction <= 2.0 + 1e-9 {
            2.0
        } else if fraction <= 5.0 + 1e-9 {
            5.0
        } else {
            10.0
        };
        nice * base
    }

    /// An axis: its range (on tick values) and ticks.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Axis {
        /// Lowest value shown (the first tick).
        pub lo: f64,
        /// Highest value shown (the last tick).
        pub hi: f64,
        /// Distance between ticks.
        pub step: f64,
        /// The tick values, `lo` to `hi`.
        pub ticks: Vec<f64>,
    }

    impl Axis {
        /// An axis covering `lo..=hi` with at most about `max_ticks` round ticks.
        pub fn new(lo: f64, hi: f64, max_ticks: usize) -> Axis {
            let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() {
                (lo.min(hi), lo.max(hi))
            } else {
                (0.0, 1.0)
            };
            if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
                if lo == 0.0 {
                    hi = 1.0;
                } else {
                    let pad = lo.abs() * 0.1;
                    lo -= pad;
                    hi += pad;
                }
            }
            if !(hi - lo).is_finite() {
                // Beyond what round ticks can describe: just the two ends.
                return Axis {
                    lo,
                    hi,
                    step: f64::MAX,
                    ticks: vec![lo, hi],
                };
            }
            let intervals = max_ticks.max(2) - 1;
            let mut step = nice_step((hi - lo) / intervals as f64);
            // Each round at least doubles the step, so this ends well before the limit.
            for _ in 0..64 {
                let first = (lo / step).floor();
                let last = (hi / step).ceil();
                let span = last - first;
                if span.is_finite() && span <= intervals as f64 {
                    let n = span as usize;
                    let ticks = (0..=n)
                        .map(|i| round_to_step((first + i as f64) * step, step))
                        .collect::<Vec<_>>();
                    return Axis {
                        lo: ticks[0],
                        hi: ticks[n],
                        step,
                        ticks,
                    };
                }
                step = nice_step(step * 2.0);
            }
            Axis {
                lo,
                hi,
                step: hi - lo,
                ticks: vec![lo, hi],
            }
        }

        /// Where `value` falls between pixel `from` (at `lo`) and pixel `to` (at `hi`).
        pub fn map(&self, value: f64, from: f64, to: f64) -> f64 {
            let span = self.hi - self.lo;
            if span <= 0.0 {
                return from;
            }
            from + (value - self.lo) / span * (to - from)
        }

        /// A tick's label with as many decimals as the step needs.
        pub fn label(&self, value: f64) -> String {
            let decimals = (-self.step.log10().floor()).max(0.0) as usize;
            let text = format!("{value:.decimals$}");
            if text.starts_with('-') && text.trim_start_matches(['-', '0', '.']).is_empty() {
                text[1..].to_string()
            } else {
                text
            }
        }
    }

    /// Removes the float noise of `value = k × step`.
    fn round_to_step(value: f64, step: f64) -> f64 {
        let decimals = (-step.log10().floor()).max(0.0) as i32 + 1;
        let scale = 10f64.powi(decimals);
        (value * scale).round() / scale
    }

    /// How a series is drawn.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum Mark {
        /// A polyline through the points.
        Line,
        /// A staircase (for CDFs): horizontal, then vertical.
        Step,
        /// A dot per point.
        Points,
        /// A bar per point from the x value to x + width, from 0 to y.
        Bars {
            /// Bar width in x units.
            width: f64,
        },
    }

    /// One series of a chart.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Series {
        /// Legend label.
        pub name: String,
        /// CSS colour.
        pub color: &'static str,
        /// How it is drawn.
        pub mark: Mark,
        /// Data points (x, y).
        pub points: Vec<(f64, f64)>,
        /// Drawn against the right-hand y axis.
        pub right: bool,
    }

    /// A chart: axes, series, vertical markers.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Chart {
        /// Title above the plot.
        pub title: String,
        /// X axis label.
        pub x_label: String,
        /// Left y axis label.
        pub y_label: String,
        /// Right y axis label, when some series use it.
        pub y2_label: Option<String>,
        /// The series.
        pub series: Vec<Series>,
        /// Vertical dashed lines at x, with a label.
        pub markers: Vec<(f64, String)>,
        /// Force the left y axis to start at zero.
        pub y_from_zero: bool,
        /// Force the x axis to start at zero.
        pub x_from_zero: bool,
        /// A fixed left y range instead of the data's.
        pub y_range: Option<(f64, f64)>,
    }

    /// Width of every chart, px.
    pub const WIDTH: f64 = 960.0;
    /// Height of every chart, px.
    pub const HEIGHT: f64 = 330.0;

    fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
        values
            .filter(|v| v.is_finite())
            .fold(None, |acc, v| match acc {
                None => Some((v, v)),
                Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
            })
    }

    impl Chart {
        /// A chart with a title and axis labels and nothing in it yet.
        pub fn new(title: &str, x_label: &str, y_label: &str) -> Chart {
            Chart {
                title: title.to_string(),
                x_label: x_label.to_string(),
                y_label: y_label.to_string(),
                y2_label: None,
                series: Vec::new(),
                markers: Vec::new(),
                y_from_zero: true,
                x_from_zero: true,
                y_range: None,
            }
        }

        /// True when no series has a point.
        pub fn is_empty(&self) -> bool {
            self.series.iter().all(|s| s.points.is_empty())
        }

        /// The chart as an `<svg>` element; a "no samples" note when it has no data.
        pub fn render(&self) -> String {
            let (w, h) = (WIDTH, HEIGHT);
            let mut out = String::new();
            let _ = write!(
                out,
                r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}">"#,
                t = escape(&self.title)
            );
            let _ = write!(
                out,
                r#"<text class="title" x="{x}" y="20">{t}</text>"#,
                x = 16,
                t = escape(&self.title)
            );
            if self.is_empty() {
                let _ = write!(
                    out,
                    r#"<text class="empty" x="{x}" y="{y}" text-anchor="middle">no samples</text></svg>"#,
                    x = w / 2.0,
                    y = h / 2.0
                );
                return out;
            }
            let has_right = self.series.iter().any(|s| s.right && !s.points.is_empty());
            let (left, right, top, bottom) = (
                70.0,
                if has_right { w - 70.0 } else { w - 24.0 },
                40.0,
                h - 50.0,
            );

            let xs = self
                .series
                .iter()
                .flat_map(|s| {
                    let extra = match s.mark {
                        Mark::Bars { width } => width,
                        _ => 0.0,
                    };
                    s.points
                        .iter()
                        .flat_map(move |&(x, _)| [x, x + extra])
                        .collect::<Vec<_>>()
                })
                .chain(self.markers.iter().map(|m| m.0));
            let (mut x_lo, x_hi) = range(xs).unwrap_or((0.0, 1.0));
            if self.x_from_zero {
                x_lo = x_lo.min(0.0);
            }
            let x_axis = Axis::new(x_lo, x_hi, 11);
            let y_axis = |right_side: bool, from_zero: bool| {
                let ys = self
                    .series
                    .iter()
                    .filter(|s| s.right == right_side)
                    .flat_map(|s| s.points.iter().map(|p| p.1));
                let (mut lo, hi) = range(ys).unwrap_or((0.0, 1.0));
                if from_zero {
                    lo = lo.min(0.0);
                }
                Axis::new(lo, hi, 6)
            };
            let y = match self.y_range {
                Some((lo, hi)) => Axis::new(lo, hi, 6),
                None => y_axis(false, self.y_from_zero),
            };
            let y2 = has_right.then(|| y_axis(true, true));

            // Grid, ticks and labels.
            out.push_str(r#"<g class="grid">"#);
            for &t in &y.ticks {
                let py = y.map(t, bottom, top);
                let _ = write!(
                    out,
                    r#"<line x1="{left}" y1="{py:.1}" x2="{right}" y2="{py:.1}"/>"#
                );
            }
            out.push_str("</g>");
            out.push_str(r#"<g class="axis">"#);
            let _ = write!(
                out,
                r#"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"/>"#
            );
            for &t in &x_axis.ticks {
                let px = x_axis.map(t, left, right);
                let _ = write!(
                    out,
                    r#"<line x1="{px:.1}" y1="{bottom}" x2="{px:.1}" y2="{b5}"/><text x="{px:.1}" y="{b18}" text-anchor="middle">{l}</text>"#,
                    b5 = bottom + 5.0,
                    b18 = bottom + 18.0,
                    l = x_axis.label(t)
                );
            }
            for &t in &y.ticks {
                let py = y.map(t, bottom, top);
                let _ = write!(
                    out,
                    r#"<text x="{lx}" y="{ly:.1}" text-anchor="end">{l}</text>"#,
                    lx = left - 6.0,
                    ly = py + 4.0,
                    l = y.label(t)
                );
            }
            if let Some(y2) = &y2 {
                let _ = write!(
                    out,
                    r#"<line x1="{right}" y1="{top}" x2="{right}" y2="{bottom}"/>"#
                );
                for &t in &y2.ticks {
                    let py = y2.map(t, bottom, top);
                    let _ = write!(
                        out,
                        r#"<text x="{lx}" y="{ly:.1}" text-anchor="start">{l}</text>"#,
                        lx = right + 6.0,
                        ly = py + 4.0,
                        l = y2.label(t)
                    );
                }
            }
            let _ = write!(
                out,
                r#"<text class="label" x="{x}" y="{y}" text-anchor="middle">{t}</text>"#,
                x = (left + right) / 2.0,
                y = h - 12.0,
                t = escape(&self.x_label)
            );
            let _ = write!(
                out,
                r#"<text class="label" x="16" y="{y}" text-anchor="middle" transform="rotate(-90 16 {y})">{t}</text>"#,
                y = (top + bottom) / 2.0,
                t = escape(&self.y_label)
            );
            if let (Some(_), Some(label)) = (&y2, &self.y2_label) {
                let _ = write!(
                    out,
                    r#"<text class="label" x="{x}" y="{y}" text-anchor="middle" transform="rotate(90 {x} {y})">{t}</text>"#,
                    x = w - 16.0,
                    y = (top + bottom) / 2.0,
                    t = escape(label)
                );
            }
            out.push_str("</g>");

            // Series.
            for s in &self.series {
                let axis = match (&y2, s.right) {
                    (Some(y2), true) => y2,
                    _ => &y,
                };
                let px = |x: f64| x_axis.map(x, left, right);
                let py = |v: f64| axis.map(v, bottom, top).clamp(top, bottom);
                let points = s
                    .points
                    .iter()
                    .filter(|p| p.0.is_finite() && p.1.is_finite());
                match s.mark {
                    Mark::Line | Mark::Step => {
                        let mut path = String::new();
                        let mut previous: Option<f64> = None;
                        for &(x, v) in points {
                            if let (Mark::Step, Some(prev)) = (s.mark, previous) {
                                let _ = write!(path, "{:.1},{:.1} ", px(x), py(prev));
                            } else if s.mark == Mark::Step && previous.is_none() {
                                let _ = write!(path, "{:.1},{:.1} ", px(x), py(0.0));
                            }
                            let _ = write!(path, "{:.1},{:.1} ", px(x), py(v));
                            previous = Some(v);
                        }
                        let _ = write!(
                            out,
                            r#"<polyline fill="none" stroke="{c}" stroke-width="1.8" points="{p}"/>"#,
                            c = s.color,
                            p = path.trim_end()
                        );
                    }
                    Mark::Points => {
                        let _ = write!(out, r#"<g fill="{c}" fill-opacity="0.55">"#, c = s.color);
                        for &(x, v) in points {
                            let _ = write!(
                                out,
                                r#"<circle cx="{:.1}" cy="{:.1}" r="2"/>"#,
                                px(x),
                                py(v)
                            );
                        }
                        out.push_str("</g>");
                    }
                    Mark::Bars { width } => {
                        let _ = write!(out, r#"<g fill="{c}" fill-opacity="0.55">"#, c = s.color);
                        for &(x, v) in points {
                            if v <= 0.0 {
                                continue;
                            }
                            let (x0, x1) = (px(x), px(x + width));
                            let (y0, y1) = (py(v), py(0.0));
                            let _ = write!(
                                out,
                                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/>"#,
                                x0,
                                y0,
                                (x1 - x0).max(0.5),
                                (y1 - y0).max(0.0)
                            );
                        }
                        out.push_str("</g>");
                    }
                }
            }

            // Markers.
            for (x, label) in &self.markers {
                let mx = x_axis.map(*x, left, right);
                let _ = write!(
                    out,
                    r#"<g class="marker"><line x1="{mx:.1}" y1="{top}" x2="{mx:.1}" y2="{bottom}"/><text x="{tx:.1}" y="{ty}">{t}</text></g>"#,
                    tx = mx + 4.0,
                    ty = bottom - 6.0,
                    t = escape(label)
                );
            }

            // Legend, right-aligned above the plot.
            let mut lx = right;
            let mut legend = String::new();
            for s in self.series.iter().rev() {
                let text_w = s.name.chars().count() as f64 * 7.0;
                lx -= text_w + 24.0;
                let _ = write!(
                    legend,
                    r#"<rect x="{lx:.1}" y="14" width="12" height="10" fill="{c}"/><text x="{tx:.1}" y="23">{t}</text>"#,
                    c = s.color,
                    tx = lx + 16.0,
                    t = escape(&s.name)
                );
            }
            let _ = write!(out, r#"<g class="legend">{legend}</g>"#);
            out.push_str("</svg>");
            out
        }
    }
}

use plot::{Chart, Mark, Series};

const BLUE: &str = "#2b6cb0";
const ORANGE: &str = "#dd6b20";
const GREEN: &str = "#2f855a";
const PURPLE: &str = "#6b46c1";

/// The response/voiced histogram.
fn histogram_chart(report: &RunReport) -> Chart {
    let response: Vec<f64> = report.turns.iter().filter_map(|t| t.response_ms).collect();
    let voiced: Vec<f64> = report.turns.iter().filter_map(|t| t.voiced_ms).collect();
    let mut chart = Chart::new("Response latency histogram", "ms", "turns");
    chart.x_from_zero = false;
    if let Some(h) = histogram(&[&response, &voiced], 40) {
        if h.overflow > 0 {
            chart.title = format!(
                "Response latency histogram ({} samples above {} ms counted in the last bin)",
                h.overflow,
                fmt_ms(h.start + h.width * h.counts[0].len() as f64)
            );
        }
        for (i, (name, color)) in [("response", BLUE), ("voiced", ORANGE)].iter().enumerate() {
            chart.series.push(Series {
                name: (*name).to_string(),
                color,
                mark: Mark::Bars { width: h.width },
                points: h.counts[i]
                    .iter()
                    .enumerate()
                    .map(|(b, &c)| (h.start + b as f64 * h.width, f64::from(c)))
                    .collect(),
                right: false,
            });
        }
    }
    chart
}

/// The latency CDFs.
fn cdf_chart(report: &RunReport) -> Chart {
    let response: Vec<f64> = report.turns.iter().filter_map(|t| t.response_ms).collect();
    let voiced: Vec<f64> = report.turns.iter().filter_map(|t| t.voiced_ms).collect();
    let clear: Vec<f64> = report.barge_ins.iter().filter_map(|b| b.clear_ms).collect();
    let mut chart = Chart::new("Latency CDF", "ms", "% of samples ≤ x");
    chart.y_range = Some((0.0, 100.0));
    for (name, color, samples) in [
        ("response", BLUE, &response),
        ("voiced", ORANGE, &voiced),
        ("barge-in → clear", GREEN, &clear),
    ] {
        chart.series.push(Series {
            name: name.to_string(),
            color,
            mark: Mark::Step,
            points: cdf_points(samples, 1000),
            right: false,
        });
    }
    if chart.is_empty() {
        chart.series.clear();
    }
    chart
}

/// Response latency over the run, with the end of the ramp marked.
fn over_time_chart(report: &RunReport) -> Chart {
    let points: Vec<(f64, f64)> = report
        .turns
        .iter()
        .filter_map(|t| t.response_ms.map(|r| (t.at_s, r)))
        .collect();
    let mut chart = Chart::new("Response latency over time", "seconds since start", "ms");
    if !points.is_empty() {
        chart.series.push(Series {
            name: "response".to_string(),
            color: BLUE,
            mark: Mark::Points,
            points: thin(&points, MAX_SCATTER_POINTS),
            right: false,
        });
        chart
            .markers
            .push((report.info.ramp_s, "ramp end".to_string()));
    }
    chart
}

/// One gateway resource over time, with live calls on the right axis.
fn resource_chart(report: &RunReport, title: &str, unit: &str, cpu: bool) -> Chart {
    let samples = thin(&report.resources, 2000);
    let mut chart = Chart::new(title, "seconds since start", unit);
    chart.y2_label = Some("live calls".to_string());
    if !samples.is_empty() {
        chart.series.push(Series {
            name: if cpu { "CPU %" } else { "RSS MiB" }.to_string(),
            color: if cpu { PURPLE } else { GREEN },
            mark: Mark::Line,
            points: samples
                .iter()
                .map(|r| (r.t_s, if cpu { r.cpu_pct } else { r.rss_mib }))
                .collect(),
            right: false,
        });
        chart.series.push(Series {
            name: "live calls".to_string(),
            color: "#a0aec0",
            mark: Mark::Line,
            points: samples
                .iter()
                .map(|r| (r.t_s, f64::from(r.live_calls)))
                .collect(),
            right: true,
        });
        chart
            .markers
            .push((report.info.ramp_s, "ramp end".to_string()));
    }
    chart
}

/// Calls started over time (from the calls' start times), and live calls when sampled.
fn calls_chart(report: &RunReport) -> Chart {
    let mut starts: Vec<f64> = report
        .calls
        .iter()
        .map(|c| c.started_s)
        .filter(|s| s.is_finite())
        .collect();
    starts.sort_by(f64::total_cmp);
    let started: Vec<(f64, f64)> = starts
        .iter()
        .enumerate()
        .map(|(i, &t)| (t, (i + 1) as f64))
        .collect();
    let mut chart = Chart::new("Calls over time", "seconds since start", "calls");
    if !started.is_empty() {
        chart.series.push(Series {
            name: "calls started".to_string(),
            color: BLUE,
            mark: Mark::Step,
            points: thin(&started, 2000),
            right: false,
        });
    }
    if !report.resources.is_empty() {
        chart.series.push(Series {
            name: "live calls (sampled)".to_string(),
            color: ORANGE,
            mark: Mark::Line,
            points: thin(&report.resources, 2000)
                .iter()
                .map(|r| (r.t_s, f64::from(r.live_calls)))
                .collect(),
            right: false,
        });
    }
    if !chart.is_empty() {
        chart
            .markers
            .push((report.info.ramp_s, "ramp end".to_string()));
    }
    chart
}

const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1000px;color:#1a202c;padding:0 16px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
table{border-collapse:collapse;margin:4px 0}th,td{padding:3px 10px;text-align:left;vertical-align:top}
table.figures td.num,table.figures th.num{text-align:right;font-variant-numeric:tabular-nums}
table.figures tbody tr:nth-child(odd){background:#f7fafc}table.info th{color:#4a5568;font-weight:600}
td.wrap{word-break:break-all;max-width:620px}
figure{margin:12px 0 20px}svg.chart{max-width:100%;height:auto;background:#fff;border:1px solid #e2e8f0}
svg .title{font-size:14px;font-weight:600;fill:#1a202c}svg text{font-size:11px;fill:#4a5568}
svg .label{font-size:12px}svg .empty{font-size:16px;fill:#a0aec0}
svg .grid line{stroke:#edf2f7}svg .axis line{stroke:#718096}
svg .marker line{stroke:#e53e3e;stroke-dasharray:5 4}svg .marker text{fill:#e53e3e}
";

fn row(out: &mut String, cells: &[(&str, &str)]) {
    out.push_str("<tr>");
    for (class, text) in cells {
        if class.is_empty() {
            let _ = write!(out, "<td>{}</td>", escape(text));
        } else {
            let _ = write!(out, r#"<td class="{class}">{}</td>"#, escape(text));
        }
    }
    out.push_str("</tr>");
}

/// The HTML report: one self-contained file (inline CSS and SVG, no script, no network).
pub fn render_html(report: &RunReport) -> String {
    let info = &report.info;
    let s = &report.summary;
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>voicegw loadtest · {}</title><style>{CSS}</style></head><body>\n",
        escape(&info.scenario)
    );
    let _ = writeln!(
        out,
        "<h1>voicegw loadtest · {} calls · {}</h1>",
        info.calls,
        escape(&info.scenario)
    );
    out.push_str(r#"<table class="info"><tbody>"#);
    let mut info_rows = vec![
        ("target", info.target.clone()),
        ("carrier", info.carrier.clone()),
        ("calls", info.calls.to_string()),
        ("ramp", fmt_secs(info.ramp_s)),
        ("duration", fmt_secs(info.duration_s)),
        ("scenario", info.scenario.clone()),
        ("fakes", fakes_line(report)),
        ("started", info.started_at.clone()),
        ("version", info.version.clone()),
    ];
    if let Some(dir) = &report.transcripts_dir {
        info_rows.push(("transcripts", dir.clone()));
    }
    for (name, value) in info_rows {
        let _ = write!(
            out,
            r#"<tr><th>{}</th><td class="wrap">{}</td></tr>"#,
            escape(name),
            escape(&value)
        );
    }
    out.push_str("</tbody></table>\n<h2>Latency (ms)</h2>\n");
    out.push_str(r#"<table class="figures"><thead><tr><th></th><th class="num">n</th><th class="num">p50</th><th class="num">p95</th><th class="num">p99</th><th class="num">max</th></tr></thead><tbody>"#);
    for (name, p) in latency_rows(s) {
        let cells = latency_cells(p);
        let mut all: Vec<(&str, &str)> = vec![("", name)];
        all.extend(cells.iter().map(|c| ("num", c.as_str())));
        row(&mut out, &all);
    }
    out.push_str("</tbody></table>\n<h2>Counts</h2>\n");
    out.push_str(r#"<table class="figures"><tbody>"#);
    for (name, text) in count_rows(s) {
        row(&mut out, &[("", name), ("", &text)]);
    }
    for (kind, count) in &s.violation_kinds {
        row(
            &mut out,
            &[
                ("", "violation kind"),
                ("wrap", &format!("{kind}: {count}")),
            ],
        );
    }
    out.push_str("</tbody></table>\n<h2>Plots</h2>\n");
    let charts = [
        histogram_chart(report),
        cdf_chart(report),
        over_time_chart(report),
        resource_chart(report, "Gateway CPU over time", "CPU % of one core", true),
        resource_chart(report, "Gateway memory over time", "RSS MiB", false),
        calls_chart(report),
    ];
    for chart in &charts {
        let _ = writeln!(out, "<figure>{}</figure>", chart.render());
    }
    let problems: Vec<_> = report
        .calls
        .iter()
        .filter(|c| c.end != CallEnd::Completed || !c.violations.is_empty())
        .collect();
    let _ = writeln!(out, "<h2>Calls with problems ({})</h2>", problems.len());
    if problems.is_empty() {
        out.push_str("<p>None.</p>\n");
    } else {
        out.push_str(r#"<table class="figures"><thead><tr><th class="num">call</th><th>end</th><th class="num">violations</th><th>first violation</th></tr></thead><tbody>"#);
        for c in problems.iter().take(MAX_PROBLEM_ROWS) {
            let end = match &c.end {
                CallEnd::Completed => "completed".to_string(),
                CallEnd::ConnectFailed { reason } => format!("connect failed: {reason}"),
                CallEnd::Dropped { reason } => format!("dropped: {reason}"),
            };
            let first = c.violations.first().map(String::as_str).unwrap_or("");
            row(
                &mut out,
                &[
                    ("num", &c.call.to_string()),
                    ("wrap", &clip_chars(&end, 300)),
                    ("num", &c.violations.len().to_string()),
                    ("wrap", &clip_chars(first, 300)),
                ],
            );
        }
        out.push_str("</tbody></table>\n");
        if problems.len() > MAX_PROBLEM_ROWS {
            let _ = writeln!(
                out,
                "<p>… and {} more in report.json.</p>",
                problems.len() - MAX_PROBLEM_ROWS
            );
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// Writes report.json (pretty) and report.html into `out_dir`, creating it if needed.
pub fn write_reports(report: &RunReport, out_dir: &Path) -> Result<ReportFiles, ReportError> {
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let json = out_dir.join("report.json");
    let html = out_dir.join("report.html");
    let text = serde_json::to_string_pretty(report).map_err(|source| ReportError::Json {
        path: json.clone(),
        source,
    })?;
    std::fs::write(&json, text).map_err(|source| ReportError::Io {
        path: json.clone(),
        source,
    })?;
    std::fs::write(&html, render_html(report)).map_err(|source| ReportError::Io {
        path: html.clone(),
        source,
    })?;
    Ok(ReportFiles { json, html })
}

#[cfg(test)]
mod tests {
    use super::plot::{Axis, nice_step};
    use super::*;

    #[test]
    fn nice_steps() {
        let cases = [
            (0.7, 1.0),
            (1.0, 1.0),
            (1.3, 2.0),
            (2.0, 2.0),
            (2.1, 5.0),
            (7.0, 10.0),
            (13.0, 20.0),
            (0.031, 0.05),
            (450.0, 500.0),
            (0.0, 1.0),
            (-3.0, 1.0),
            (f64::NAN, 1.0),
        ];
        for (raw, want) in cases {
            assert_eq!(nice_step(raw), want, "nice_step({raw})");
        }
    }

    #[test]
    fn axis_ticks_are_round_and_cover_the_range() {
        let a = Axis::new(0.0, 973.0, 11);
        assert_eq!(a.step, 100.0);
        assert_eq!(a.ticks.first(), Some(&0.0));
        assert_eq!(a.ticks.last(), Some(&1000.0));
        assert_eq!(a.ticks.len(), 11);

        let b = Axis::new(0.0, 0.3, 6);
        assert_eq!(b.ticks, vec![0.0, 0.1, 0.2, 0.3]);
        assert_eq!(b.label(0.1), "0.1");

        let c = Axis::new(-12.0, 47.0, 6);
        assert_eq!(c.step, 20.0);
        assert_eq!(c.ticks, vec![-20.0, 0.0, 20.0, 40.0, 60.0]);
        assert_eq!(c.label(-20.0), "-20");

        // Degenerate ranges still give a usable axis.
        assert_eq!(
            Axis::new(0.0, 0.0, 6).ticks,
            vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        );
        let d = Axis::new(50.0, 50.0, 6);
        assert!(d.lo < 50.0 && d.hi > 50.0);
        assert_eq!(Axis::new(f64::NAN, 3.0, 6).ticks.last(), Some(&1.0));
        // Mapping.
        assert_eq!(a.map(500.0, 0.0, 100.0), 50.0);
        assert_eq!(a.map(0.0, 300.0, 40.0), 300.0);
    }

    #[test]
    fn axis_labels_lose_float_noise() {
        let a = Axis::new(0.0, 0.7, 8);
        let labels: Vec<String> = a.ticks.iter().map(|&t| a.label(t)).collect();
        assert_eq!(
            labels,
            vec!["0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
        );
    }

    #[test]
    fn ms_format() {
        assert_eq!(fmt_ms(412.4), "412");
        assert_eq!(fmt_ms(9.94), "9.9");
        assert_eq!(fmt_ms(10.0), "10");
        assert_eq!(fmt_ms(0.0), "0.0");
        assert_eq!(fmt_ms(-3.25), "-3.2");
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(escape("a\u{1b}b"), "a\u{FFFD}b");
        assert_eq!(terminal_safe("a\u{1b}[2Jb"), "a?[2Jb");
    }

    #[test]
    fn thinning_is_bounded_and_deterministic() {
        let items: Vec<u32> = (0..12_345).collect();
        let t = thin(&items, 5000);
        assert!(t.len() <= 5000);
        assert_eq!(t.len(), 4115);
        assert_eq!(&t[..3], &[0, 3, 6]);
        assert_eq!(thin(&items, 5000), t);
        assert_eq!(thin(&items[..10], 5000).len(), 10);
        assert!(thin(&items, 0).is_empty());
    }

    #[test]
    fn cdf() {
        let pts = cdf_points(&[3.0, 1.0, 2.0, 4.0], 100);
        assert_eq!(
            pts,
            vec![(1.0, 25.0), (2.0, 50.0), (3.0, 75.0), (4.0, 100.0)]
        );
        let many: Vec<f64> = (1..=10_000).map(f64::from).collect();
        let pts = cdf_points(&many, 1000);
        assert_eq!(pts.len(), 1000);
        assert_eq!(pts[0], (10.0, 0.1));
        assert_eq!(pts[999], (10_000.0, 100.0));
        assert!(cdf_points(&[], 10).is_empty());
    }

    #[test]
    fn histogram_bins() {
        let a: Vec<f64> = (0..100).map(f64::from).collect(); // 0..=99
        let h = histogram(&[&a, &[5.0, 1000.0]], 10).expect("samples");
        // p99 of all 102 samples is 99 → width 10, bins 0..110.
        assert_eq!((h.start, h.width), (0.0, 10.0));
        assert_eq!(h.counts[0].len(), 10);
        assert_eq!(h.counts[0], vec![10; 10]);
        assert_eq!(h.counts[1].iter().sum::<u32>(), 2);
        assert_eq!(h.counts[1][0], 1);
        assert_eq!(h.counts[1][9], 1);
        assert_eq!(h.overflow, 1);
        assert!(histogram(&[&[]], 10).is_none());
        let one = histogram(&[&[0.0]], 10).expect("one sample");
        assert_eq!(one.counts[0].iter().sum::<u32>(), 1);
    }

    #[test]
    fn empty_chart_says_no_samples() {
        let svg = Chart::new("t<", "x", "y").render();
        assert!(svg.contains("no samples"));
        assert!(svg.contains("t&lt;"));
        assert!(svg.ends_with("</svg>"));
    }

    proptest::proptest! {
        #[test]
        fn axis_covers_any_range(lo in -1e6f64..1e6, width in 1e-3f64..1e9, max_ticks in 2usize..15) {
            let hi = lo + width;
            let a = Axis::new(lo, hi, max_ticks);
            let slack = width * 1e-9;
            proptest::prop_assert!(a.ticks.len() >= 2);
            proptest::prop_assert!(a.ticks.len() <= max_ticks);
            proptest::prop_assert!(a.lo <= lo + slack && a.hi >= hi - slack);
            proptest::prop_assert!(a.ticks.windows(2).all(|w| w[0] < w[1]));
        }

        #[test]
        fn axis_never_hangs_or_panics(lo in proptest::num::f64::ANY, hi in proptest::num::f64::ANY) {
            let a = Axis::new(lo, hi, 6);
            proptest::prop_assert!(!a.ticks.is_empty());
        }

        #[test]
        fn histogram_never_panics(values in proptest::collection::vec(proptest::num::f64::ANY, 0..50)) {
            if let Some(h) = histogram(&[&values], 40) {
                proptest::prop_assert!(h.counts[0].len() <= 4 * 40 + 2);
            }
        }

        #[test]
        fn escaped_text_has_no_markup(text in ".*") {
            let e = escape(&text);
            proptest::prop_assert!(!e.contains(['<', '>', '"', '\'']));
        }
    }

    #[test]
    fn huge_ranges_still_give_an_axis() {
        let a = Axis::new(-1e308, 1e308, 6);
        assert_eq!(a.ticks, vec![-1e308, 1e308]);
        assert!(histogram(&[&[-1e308, 1e308]], 10).is_none());
    }

    #[test]
    fn clip_chars_marks_the_cut() {
        assert_eq!(clip_chars("abcdef", 4), "abc…");
        assert_eq!(clip_chars("abc", 4), "abc");
    }
}
