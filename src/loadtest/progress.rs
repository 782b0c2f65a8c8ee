//! The live progress bar: one line on stderr, refreshed about four times a second from the
//! run's [`LiveCounters`]:
//!
//! `[00:01:20] ██████░░ calls up 873/1000 · turns 4 210 · errors 0 · ends in 1:10`
//!
//! It is hidden when asked, or when stderr is not a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::results::LiveCounters;

/// How often the bar is refreshed.
pub const REFRESH: Duration = Duration::from_millis(250);

/// The updater stops by itself this long after the run's planned end.
const OVERRUN_LIMIT: Duration = Duration::from_secs(3600);

/// `n` with a space between groups of three digits: `4 210`.
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// A remaining time as `m:ss`, or `h:mm:ss` from an hour.
pub fn fmt_remaining(left: Duration) -> String {
    let secs = left.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// The bar's message: `calls up 873/1000 · turns 4 210 · errors 0 · ends in 1:10`.
pub fn status_line(calls_up: u64, calls: u64, turns: u64, errors: u64, left: Duration) -> String {
    format!(
        "calls up {calls_up}/{calls} · turns {} · errors {} · ends in {}",
        group_digits(turns),
        group_digits(errors),
        fmt_remaining(left)
    )
}

/// A running progress bar.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    stop: CancellationToken,
}

impl Progress {
    /// Starts the bar for a run of `calls` calls planned to end at `ends_at`.
    ///
    /// With `visible` false, or stderr not a terminal, nothing is drawn and no task runs.
    /// The refresh task needs a tokio runtime; outside one the bar is drawn once.
    pub fn start(
        calls: u64,
        live: Arc<LiveCounters>,
        ends_at: tokio::time::Instant,
        visible: bool,
    ) -> Progress {
        let stop = CancellationToken::new();
        if !visible || !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                stop,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(calls), ProgressDrawTarget::stderr_with_hz(4));
        let style = ProgressStyle::with_template("[{elapsed_precise}] {bar:24.cyan/blue} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▓░");
        bar.set_style(style);
        let update = {
            let bar = bar.clone();
            move || {
                let up = live.calls_up.load(Ordering::Relaxed);
                bar.set_position(up.min(calls));
                bar.set_message(status_line(
                    up,
                    calls,
                    live.turns.load(Ordering::Relaxed),
                    live.errors.load(Ordering::Relaxed),
                    ends_at.saturating_duration_since(tokio::time::Instant::now()),
                ));
            }
        };
        update();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let stop = stop.clone();
            runtime.spawn(async move {
                let give_up = ends_at + OVERRUN_LIMIT;
                let mut ticker = tokio::time::interval(REFRESH);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep_until(give_up) => break,
                        _ = ticker.tick() => update(),
                    }
                }
            });
        }
        Progress { bar, stop }
    }

    /// True when the bar is drawn.
    pub fn is_visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Stops the refresh task and clears the bar.
    pub fn finish(self) {
        self.stop.cancel();
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(4210), "4 210");
        assert_eq!(group_digits(1_234_567), "1 234 567");
    }

    #[test]
    fn remaining() {
        assert_eq!(fmt_remaining(Duration::from_secs(70)), "1:10");
        assert_eq!(fmt_remaining(Duration::from_millis(900)), "0:00");
        assert_eq!(fmt_remaining(Duration::from_secs(3725)), "1:02:05");
    }

    #[test]
    fn line() {
        assert_eq!(
            status_line(873, 1000, 4210, 0, Duration::from_secs(70)),
            "calls up 873/1000 · turns 4 210 · errors 0 · ends in 1:10"
        );
    }

    #[tokio::test]
    async fn hidden_bar_starts_and_finishes() {
        let live = Arc::new(LiveCounters::default());
        let ends = tokio::time::Instant::now() + Duration::from_secs(5);
        let p = Progress::start(10, live.clone(), ends, false);
        assert!(!p.is_visible());
        LiveCounters::bump(&live.calls_up);
        p.finish();
    }

    #[test]
    fn works_outside_a_runtime() {
        let live = Arc::new(LiveCounters::default());
        let ends = tokio::time::Instant::now();
        Progress::start(1, live, ends, true).finish();
    }
}
