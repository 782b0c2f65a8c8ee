//! A scripted call's two timers: no input after a prompt, and the next key of a multi-key
//! entry.
//!
//! Each run is a spawned sleep that comes back to the agent as a [`TimerFired`] wake message
//! carrying the run's generation number, so a timer stopped or restarted in the meantime is
//! recognised and ignored. The no-input timer can be paused while the caller speaks and
//! resumed with the time it had left.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::call::agent::{AgentAction, AgentPort};

/// Which timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// No input after the prompt.
    NoInput,
    /// The next key of an entry.
    Digit,
}

/// A timer ran out (sent to the agent as [`AgentAction::Wake`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerFired {
    /// Which.
    pub timer: Timer,
    /// The run it belongs to.
    pub generation: u64,
}

/// One running timer.
#[derive(Debug)]
struct Run {
    generation: u64,
    deadline: Instant,
    stop: CancellationToken,
}

/// The no-input timer's state.
#[derive(Debug)]
enum NoInput {
    Off,
    Running { run: Run, total: Duration },
    Paused { left: Duration, total: Duration },
}

/// The timers of one call.
#[derive(Debug)]
pub struct Timers {
    /// Cancelled when the call ends: stops every timer and background job of the call.
    call: CancellationToken,
    generation: u64,
    no_input: NoInput,
    digit: Option<Run>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers::new()
    }
}

impl Timers {
    /// No timer running.
    pub fn new() -> Self {
        Timers {
            call: CancellationToken::new(),
            generation: 0,
            no_input: NoInput::Off,
            digit: None,
        }
    }

    /// Cancelled when the call ends (for the call's other background work too).
    pub fn call_token(&self) -> &CancellationToken {
        &self.call
    }

    fn spawn(&mut self, timer: Timer, after: Duration, port: &AgentPort) -> Run {
        self.generation += 1;
        let generation = self.generation;
        let stop = self.call.child_token();
        let port = port.clone();
        let token = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(after) => {
                    let fired = TimerFired { timer, generation };
                    let _ = port.send(AgentAction::Wake(Box::new(fired))).await;
                }
            }
        });
        Run {
            generation,
            deadline: Instant::now() + after,
            stop,
        }
    }

    /// (Re)starts the no-input timer for `after`.
    pub fn start_no_input(&mut self, port: &AgentPort, after: Duration) {
        self.stop_no_input();
        let run = self.spawn(Timer::NoInput, after, port);
        self.no_input = NoInput::Running { run, total: after };
    }

    /// Stops the no-input timer.
    pub fn stop_no_input(&mut self) {
        if let NoInput::Running { run, .. } = std::mem::replace(&mut self.no_input, NoInput::Off) {
            run.stop.cancel();
        }
    }

    /// Pauses a running no-input timer, keeping the time it had left.
    pub fn pause_no_input(&mut self) {
        if let NoInput::Running { run, total } = std::mem::replace(&mut self.no_input, NoInput::Off)
        {
            run.stop.cancel();
            let left = run.deadline.saturating_duration_since(Instant::now());
            self.no_input = NoInput::Paused { left, total };
        }
    }

    /// Resumes a paused no-input timer with the time it had left; false if it was not paused.
    pub fn resume_no_input(&mut self, port: &AgentPort) -> bool {
        let NoInput::Paused { left, total } = std::mem::replace(&mut self.no_input, NoInput::Off)
        else {
            return false;
        };
        let run = self.spawn(Timer::NoInput, left, port);
        self.no_input = NoInput::Running { run, total };
        true
    }

    /// Whether the no-input timer is neither running nor paused.
    pub fn no_input_off(&self) -> bool {
        matches!(self.no_input, NoInput::Off)
    }

    /// (Re)starts the digit timer for `after`.
    pub fn start_digit(&mut self, port: &AgentPort, after: Duration) {
        self.stop_digit();
        self.digit = Some(self.spawn(Timer::Digit, after, port));
    }

    /// Stops the digit timer.
    pub fn stop_digit(&mut self) {
        if let Some(run) = self.digit.take() {
            run.stop.cancel();
        }
    }

    /// Stops both timers.
    pub fn stop_all(&mut self) {
        self.stop_no_input();
        self.stop_digit();
    }

    /// Stops everything for good (the call is ending).
    pub fn shutdown(&mut self) {
        self.stop_all();
        self.call.cancel();
    }

    /// Whether `fired` is the current run of its timer (which is then off); for the no-input
    /// timer, also its full length.
    pub fn fired(&mut self, fired: TimerFired) -> Option<Duration> {
        match fired.timer {
            Timer::NoInput => match &self.no_input {
                NoInput::Running { run, total } if run.generation == fired.generation => {
                    let total = *total;
                    self.no_input = NoInput::Off;
                    Some(total)
                }
                _ => None,
            },
            Timer::Digit => match &self.digit {
                Some(run) if run.generation == fired.generation => {
                    self.digit = None;
                    Some(Duration::ZERO)
                }
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::agent::UtteranceIds;
    use tokio::sync::mpsc;

    fn port() -> (AgentPort, mpsc::Receiver<AgentAction>) {
        let (tx, rx) = mpsc::channel(16);
        (AgentPort::new(tx, UtteranceIds::default()), rx)
    }

    async fn next(rx: &mut mpsc::Receiver<AgentAction>, within_ms: u64) -> Option<TimerFired> {
        match tokio::time::timeout(Duration::from_millis(within_ms), rx.recv()).await {
            Ok(Some(AgentAction::Wake(m))) => m.downcast::<TimerFired>().ok().map(|f| *f),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_timer_fires_once_and_restarts_make_old_runs_stale() {
        let (port, mut rx) = port();
        let mut timers = Timers::new();
        timers.start_no_input(&port, Duration::from_millis(40));
        let fired = next(&mut rx, 500).await.expect("fired");
        assert_eq!(fired.timer, Timer::NoInput);
        assert_eq!(timers.fired(fired), Some(Duration::from_millis(40)));
        assert_eq!(timers.fired(fired), None, "only once");
        assert!(timers.no_input_off());

        // A restarted timer: a wake of the earlier run is stale.
        timers.start_digit(&port, Duration::from_millis(30));
        let first = TimerFired {
            timer: Timer::Digit,
            generation: timers.generation,
        };
        timers.start_digit(&port, Duration::from_millis(30));
        let fired = next(&mut rx, 500).await.expect("fired");
        assert_eq!(timers.fired(first), None);
        assert_eq!(timers.fired(fired), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn stopped_timers_stay_silent() {
        let (port, mut rx) = port();
        let mut timers = Timers::new();
        timers.start_no_input(&port, Duration::from_millis(30));
        timers.start_digit(&port, Duration::from_millis(30));
        timers.stop_all();
        assert!(next(&mut rx, 120).await.is_none());
        timers.start_no_input(&port, Duration::from_millis(30));
        timers.shutdown();
        assert!(timers.call_token().is_cancelled());
        assert!(next(&mut rx, 120).await.is_none());
    }

    #[tokio::test]
    async fn pause_keeps_the_time_left() {
        let (port, mut rx) = port();
        let mut timers = Timers::new();
        assert!(!timers.resume_no_input(&port), "nothing to resume");
        timers.start_no_input(&port, Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(200)).await;
        timers.pause_no_input();
        assert!(!timers.no_input_off());
        // Paused: nothing fires, however long.
        assert!(next(&mut rx, 250).await.is_none());
        let resumed = Instant::now();
        assert!(timers.resume_no_input(&port));
        let fired = next(&mut rx, 1000).await.expect("fired");
        let waited = resumed.elapsed();
        assert!(
            waited < Duration::from_millis(250),
            "resumed with what was left, waited {waited:?}"
        );
        assert_eq!(timers.fired(fired), Some(Duration::from_millis(300)));
    }
}
