//! The retry policy: after a dial attempt ends, whether and when to dial the contact again.
//!
//! Each outcome either retries or is final (`completed` is always final). The delay before the
//! k-th retry follows a backoff schedule, by default 10 min, 30 min, 2 h; past its end the last
//! step repeats, or, with a `factor`, keeps growing geometrically up to `max_backoff_secs`.
//! Optional jitter spreads retries by up to ±`jitter` of the delay, derived from a caller-given
//! seed so the decision stays a pure function. The retry instant is then moved into the
//! contact's calling window.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::window::CallingWindow;

/// How a dial attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A person answered and the call ran; never retried.
    Completed,
    /// The line was busy.
    Busy,
    /// It rang out with no answer.
    NoAnswer,
    /// The carrier could not place the call.
    Failed,
    /// An answering machine picked up.
    Voicemail,
}

impl Outcome {
    /// The outcome's name as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Busy => "busy",
            Outcome::NoAnswer => "no_answer",
            Outcome::Failed => "failed",
            Outcome::Voicemail => "voicemail",
        }
    }
}

/// The retry policy as it arrives in a campaign's JSON. Every field is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicyConfig {
    /// Total attempts allowed per contact, the first one included (default 4).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Outcomes that are dialled again (default: busy, no_answer, failed, voicemail).
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<Outcome>,
    /// Delay before the 1st, 2nd, … retry, in seconds (default 600, 1800, 7200).
    #[serde(default = "default_backoff_secs")]
    pub backoff_secs: Vec<u64>,
    /// Past the schedule's end, each delay is the previous one times this factor (default:
    /// none, the last step repeats).
    #[serde(default)]
    pub factor: Option<f64>,
    /// Upper bound on any delay, in seconds (default one day).
    #[serde(default = "default_max_backoff_secs")]
    pub max_backoff_secs: u64,
    /// Spread of each delay as a fraction, 0 ≤ jitter < 1: the delay is scaled by a factor in
    /// `[1 - jitter, 1 + jitter]` (default 0).
    #[serde(default)]
    pub jitter: f64,
}

impl Default for RetryPolicyConfig {
    fn default() -> Self {
        RetryPolicyConfig {
            max_attempts: default_max_attempts(),
            retry_on: default_retry_on(),
            backoff_secs: default_backoff_secs(),
            factor: None,
            max_backoff_secs: default_max_backoff_secs(),
            jitter: 0.0,
        }
    }
}

fn default_max_attempts() -> u32 {
    4
}

fn default_retry_on() -> Vec<Outcome> {
    vec![
        Outcome::Busy,
        Outcome::NoAnswer,
        Outcome::Failed,
        Outcome::Voicemail,
    ]
}

fn default_backoff_secs() -> Vec<u64> {
    vec![600, 1800, 7200]
}

fn default_max_backoff_secs() -> u64 {
    86_400
}

/// Most attempts a policy may allow.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Longest delay a policy may ask for: 30 days.
pub const MAX_BACKOFF_LIMIT_SECS: u64 = 30 * 86_400;
/// Largest growth factor.
pub const MAX_FACTOR: f64 = 10.0;

/// Why a retry policy is invalid; the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetryPolicyError {
    /// `max_attempts` outside 1..=100.
    #[error("retry.max_attempts: must be 1 to {MAX_ATTEMPTS_LIMIT}, got {0}")]
    MaxAttempts(u32),
    /// `retry_on` names `completed`.
    #[error("retry.retry_on: `completed` is final and cannot be retried")]
    RetryCompleted,
    /// `backoff_secs` is empty.
    #[error("retry.backoff_secs: needs at least one delay")]
    EmptyBackoff,
    /// A delay is zero or too long.
    #[error(
        "retry.backoff_secs[{index}]: must be 1 to {MAX_BACKOFF_LIMIT_SECS} seconds, got {value}"
    )]
    BackoffStep {
        /// Position in the schedule.
        index: usize,
        /// The delay given.
        value: u64,
    },
    /// `factor` is not a finite number in 1..=10.
    #[error("retry.factor: must be a number from 1 to {MAX_FACTOR}, got {0}")]
    Factor(f64),
    /// `max_backoff_secs` is zero, too long, or below a schedule step.
    #[error(
        "retry.max_backoff_secs: must be 1 to {MAX_BACKOFF_LIMIT_SECS} seconds and at least \
         the longest backoff_secs step ({longest}), got {value}"
    )]
    MaxBackoff {
        /// The bound given.
        value: u64,
        /// The longest step of the schedule.
        longest: u64,
    },
    /// `jitter` is not in `[0, 1)`.
    #[error("retry.jitter: must be a fraction from 0 up to (not including) 1, got {0}")]
    Jitter(f64),
}

/// A validated retry policy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "RetryPolicyConfig", into = "RetryPolicyConfig")]
pub struct RetryPolicy {
    config: RetryPolicyConfig,
}

impl TryFrom<RetryPolicyConfig> for RetryPolicy {
    type Error = RetryPolicyError;

    fn try_from(config: RetryPolicyConfig) -> Result<Self, Self::Error> {
        RetryPolicy::new(config)
    }
}

impl From<RetryPolicy> for RetryPolicyConfig {
    fn from(policy: RetryPolicy) -> Self {
        policy.config
    }
}

/// Why no further attempt will be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalReason {
    /// The call completed.
    Completed,
    /// The policy does not retry this outcome.
    NotRetried(Outcome),
    /// The contact has had all the attempts the policy allows.
    MaxAttempts(u32),
    /// The contact's calling window does not open again within about a year.
    NoWindow,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Dial again at `at` (inside the contact's calling window).
    Retry {
        /// When to dial.
        at: DateTime<Utc>,
    },
    /// Stop dialling this contact.
    Final {
        /// Why.
        reason: FinalReason,
    },
}

impl RetryPolicy {
    /// Validates `config`.
    pub fn new(config: RetryPolicyConfig) -> Result<RetryPolicy, RetryPolicyError> {
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&config.max_attempts) {
            return Err(RetryPolicyError::MaxAttempts(config.max_attempts));
        }
        if config.retry_on.contains(&Outcome::Completed) {
            return Err(RetryPolicyError::RetryCompleted);
        }
        if config.backoff_secs.is_empty() {
            return Err(RetryPolicyError::EmptyBackoff);
        }
        for (index, &value) in config.backoff_secs.iter().enumerate() {
            if !(1..=MAX_BACKOFF_LIMIT_SECS).contains(&value) {
                return Err(RetryPolicyError::BackoffStep { index, value });
            }
        }
        if let Some(factor) = config.factor
            && !(factor.is_finite() && (1.0..=MAX_FACTOR).contains(&factor))
        {
            return Err(RetryPolicyError::Factor(factor));
        }
        let longest = config.backoff_secs.iter().copied().max().unwrap_or(0);
        if config.max_backoff_secs > MAX_BACKOFF_LIMIT_SECS || config.max_backoff_secs < longest {
            return Err(RetryPolicyError::MaxBackoff {
                value: config.max_backoff_secs,
                longest,
            });
        }
        if !(config.jitter.is_finite() && (0.0..1.0).contains(&config.jitter)) {
            return Err(RetryPolicyError::Jitter(config.jitter));
        }
        Ok(RetryPolicy { config })
    }

    /// The policy's settings.
    pub fn config(&self) -> &RetryPolicyConfig {
        &self.config
    }

    /// Whether `outcome` is dialled again (attempts permitting).
    pub fn retries(&self, outcome: Outcome) -> bool {
        self.config.retry_on.contains(&outcome)
    }

    /// The delay before retry number `retry` (1 = the first retry), before jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let steps = &self.config.backoff_secs;
        let index = retry.saturating_sub(1) as usize;
        let cap = self.config.max_backoff_secs;
        let secs = match steps.get(index) {
            Some(&secs) => secs,
            None => {
                let last = steps.last().copied().unwrap_or(cap);
                match self.config.factor {
                    None => last,
                    Some(factor) => {
                        let beyond = (index + 1 - steps.len()).min(i32::MAX as usize) as i32;
                        let grown = last as f64 * factor.powi(beyond);
                        if grown.is_finite() && grown < cap as f64 {
                            grown.round() as u64
                        } else {
                            cap
                        }
                    }
                }
            }
        };
        Duration::seconds(secs.min(cap) as i64)
    }

    /// The delay before retry number `retry`, with the jitter drawn from `seed`: the same
    /// inputs always give the same delay.
    pub fn jittered_backoff(&self, retry: u32, seed: u64) -> Duration {
        let base = self.backoff(retry);
        if self.config.jitter == 0.0 {
            return base;
        }
        // A uniform draw in [-1, 1] from 53 random bits.
        let bits = splitmix64(seed ^ u64::from(retry).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 11;
        let unit = bits as f64 / (1u64 << 53) as f64;
        let scale = 1.0 + self.config.jitter * (2.0 * unit - 1.0);
        let millis = (base.num_milliseconds() as f64 * scale).round().max(1.0) as i64;
        Duration::milliseconds(millis)
    }

    /// What to do after an attempt that ended at `ended_at` with `outcome`, the contact having
    /// had `attempts_so_far` attempts (this one included). `seed` (e.g. derived from the
    /// contact's id) picks the jitter; the retry instant is moved into `window`.
    pub fn next_attempt(
        &self,
        outcome: Outcome,
        attempts_so_far: u32,
        ended_at: DateTime<Utc>,
        window: &CallingWindow,
        seed: u64,
    ) -> Decision {
        if outcome == Outcome::Completed {
            return Decision::Final {
                reason: FinalReason::Completed,
            };
        }
        if !self.retries(outcome) {
            return Decision::Final {
                reason: FinalReason::NotRetried(outcome),
            };
        }
        if attempts_so_far >= self.config.max_attempts {
            return Decision::Final {
                reason: FinalReason::MaxAttempts(attempts_so_far),
            };
        }
        let delay = self.jittered_backoff(attempts_so_far.max(1), seed);
        let due = ended_at.checked_add_signed(delay);
        match due.and_then(|due| window.next_allowed(due)) {
            Some(at) => Decision::Retry { at },
            None => Decision::Final {
                reason: FinalReason::NoWindow,
            },
        }
    }
}

/// SplitMix64: a small, well-mixed pure hash of a 64-bit value.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::window::CallingWindowConfig;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn always() -> CallingWindow {
        CallingWindow::always().unwrap()
    }

    fn parse(json: &str) -> Result<RetryPolicy, String> {
        serde_json::from_str::<RetryPolicy>(json).map_err(|e| e.to_string())
    }

    #[test]
    fn default_schedule_is_10m_30m_2h() {
        let p = RetryPolicy::default();
        let end = utc("2026-01-05T10:00:00Z");
        let w = always();
        let at = |n| match p.next_attempt(Outcome::Busy, n, end, &w, 7) {
            Decision::Retry { at } => at - end,
            other => panic!("{other:?}"),
        };
        assert_eq!(at(1), Duration::minutes(10));
        assert_eq!(at(2), Duration::minutes(30));
        assert_eq!(at(3), Duration::hours(2));
        assert_eq!(
            p.next_attempt(Outcome::Busy, 4, end, &w, 7),
            Decision::Final {
                reason: FinalReason::MaxAttempts(4)
            }
        );
    }

    #[test]
    fn last_step_repeats_without_factor() {
        let p = parse(r#"{"max_attempts": 10}"#).unwrap();
        for retry in 3..10 {
            assert_eq!(p.backoff(retry), Duration::hours(2));
        }
    }

    #[test]
    fn factor_grows_up_to_the_cap() {
        let p = parse(r#"{"backoff_secs": [60], "factor": 2.0, "max_backoff_secs": 600}"#).unwrap();
        let secs: Vec<i64> = (1..=7).map(|r| p.backoff(r).num_seconds()).collect();
        assert_eq!(secs, vec![60, 120, 240, 480, 600, 600, 600]);
        assert_eq!(p.backoff(u32::MAX).num_seconds(), 600);
    }

    #[test]
    fn completed_is_final_and_outcomes_can_opt_out() {
        let w = always();
        let end = utc("2026-01-05T10:00:00Z");
        let p = parse(r#"{"retry_on": ["busy", "no_answer"]}"#).unwrap();
        assert_eq!(
            p.next_attempt(Outcome::Completed, 1, end, &w, 0),
            Decision::Final {
                reason: FinalReason::Completed
            }
        );
        assert_eq!(
            p.next_attempt(Outcome::Voicemail, 1, end, &w, 0),
            Decision::Final {
                reason: FinalReason::NotRetried(Outcome::Voicemail)
            }
        );
        assert_eq!(
            p.next_attempt(Outcome::Failed, 1, end, &w, 0),
            Decision::Final {
                reason: FinalReason::NotRetried(Outcome::Failed)
            }
        );
        assert!(matches!(
            p.next_attempt(Outcome::NoAnswer, 1, end, &w, 0),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn retry_moves_into_the_window() {
        let w = CallingWindow::new(&CallingWindowConfig {
            timezone: "America/New_York".into(),
            open: vec!["mon-fri 09:00-18:00".into()],
            closed_dates: vec![],
        })
        .unwrap();
        let p = RetryPolicy::default();
        // Friday 9 January 2026 17:55 EST = 22:55Z; +10 min is after hours → Monday 09:00 EST.
        assert_eq!(
            p.next_attempt(Outcome::NoAnswer, 1, utc("2026-01-09T22:55:00Z"), &w, 0),
            Decision::Retry {
                at: utc("2026-01-12T14:00:00Z")
            }
        );
        // Inside the window the delay is kept as is.
        assert_eq!(
            p.next_attempt(Outcome::NoAnswer, 1, utc("2026-01-09T15:00:00Z"), &w, 0),
            Decision::Retry {
                at: utc("2026-01-09T15:10:00Z")
            }
        );
    }

    #[test]
    fn no_window_is_final() {
        let never = CallingWindow::new(&CallingWindowConfig {
            timezone: "UTC".into(),
            open: vec![],
            closed_dates: vec![],
        })
        .unwrap();
        assert_eq!(
            RetryPolicy::default().next_attempt(
                Outcome::Busy,
                1,
                utc("2026-01-05T10:00:00Z"),
                &never,
                0
            ),
            Decision::Final {
                reason: FinalReason::NoWindow
            }
        );
    }

    #[test]
    fn json_errors_name_the_field() {
        let cases = [
            (r#"{"max_attempts": 0}"#, "retry.max_attempts"),
            (r#"{"max_attempts": 1000}"#, "retry.max_attempts"),
            (r#"{"retry_on": ["completed"]}"#, "retry.retry_on"),
            (r#"{"backoff_secs": []}"#, "retry.backoff_secs"),
            (r#"{"backoff_secs": [60, 0]}"#, "retry.backoff_secs[1]"),
            (r#"{"factor": 0.5}"#, "retry.factor"),
            (r#"{"factor": 11}"#, "retry.factor"),
            (r#"{"max_backoff_secs": 60}"#, "retry.max_backoff_secs"),
            (r#"{"jitter": 1.0}"#, "retry.jitter"),
            (r#"{"jitter": -0.1}"#, "retry.jitter"),
            (r#"{"retries": 3}"#, "unknown field `retries`"),
            (r#"{"retry_on": ["hangup"]}"#, "unknown variant `hangup`"),
        ];
        for (json, field) in cases {
            let err = parse(json).unwrap_err();
            assert!(err.contains(field), "{json}: {err}");
        }
    }

    #[test]
    fn json_round_trip() {
        let json = r#"{"max_attempts": 6, "retry_on": ["busy"], "backoff_secs": [120, 900],
            "factor": 1.5, "max_backoff_secs": 3600, "jitter": 0.2}"#;
        let p = parse(json).unwrap();
        assert_eq!(p.config().max_attempts, 6);
        assert!(p.retries(Outcome::Busy) && !p.retries(Outcome::NoAnswer));
        let back: RetryPolicy = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(parse("{}").unwrap(), RetryPolicy::default());
        assert_eq!(Outcome::NoAnswer.as_str(), "no_answer");
    }

    #[test]
    fn jitter_is_deterministic_and_varies_by_seed() {
        let p = parse(r#"{"jitter": 0.25}"#).unwrap();
        assert_eq!(p.jittered_backoff(1, 42), p.jittered_backoff(1, 42));
        let distinct: std::collections::BTreeSet<i64> = (0..50)
            .map(|seed| p.jittered_backoff(1, seed).num_milliseconds())
            .collect();
        assert!(distinct.len() > 40, "{distinct:?}");
        assert_eq!(
            RetryPolicy::default().jittered_backoff(2, 42),
            Duration::minutes(30),
            "no jitter by default"
        );
    }

    proptest! {
        #[test]
        fn jitter_stays_within_its_fraction(
            jitter in 0.0f64..0.99,
            retry in 1u32..20,
            seed: u64,
        ) {
            let p = RetryPolicy::new(RetryPolicyConfig { jitter, ..Default::default() }).unwrap();
            let base = p.backoff(retry).num_milliseconds() as f64;
            let got = p.jittered_backoff(retry, seed).num_milliseconds() as f64;
            prop_assert!(got >= (base * (1.0 - jitter)).floor().max(1.0));
            prop_assert!(got <= (base * (1.0 + jitter)).ceil());
        }

        #[test]
        fn backoff_never_shrinks_and_respects_the_cap(
            steps in proptest::collection::vec(1u64..10_000, 1..5),
            factor in proptest::option::of(1.0f64..10.0),
            extra in 0u64..100_000,
        ) {
            let mut sorted = steps.clone();
            sorted.sort_unstable();
            let cap = sorted[sorted.len() - 1] + extra;
            let p = RetryPolicy::new(RetryPolicyConfig {
                backoff_secs: sorted,
                factor,
                max_backoff_secs: cap,
                ..Default::default()
            })
            .unwrap();
            let mut previous = Duration::zero();
            for retry in 1..40 {
                let d = p.backoff(retry);
                prop_assert!(d >= previous, "retry {retry}: {d} < {previous}");
                prop_assert!(d.num_seconds() as u64 <= cap);
                previous = d;
            }
        }

        #[test]
        fn decisions_respect_attempts_and_window(
            outcome in prop_oneof![
                Just(Outcome::Busy), Just(Outcome::NoAnswer),
                Just(Outcome::Failed), Just(Outcome::Voicemail), Just(Outcome::Completed)
            ],
            attempts in 0u32..8,
            offset_min in 0i64..500_000,
            seed: u64,
        ) {
            let w = CallingWindow::new(&CallingWindowConfig {
                timezone: "Asia/Kolkata".into(),
                open: vec!["mon-fri 09:00-18:00".into()],
                closed_dates: vec![],
            })
            .unwrap();
            let p = parse(r#"{"jitter": 0.3}"#).unwrap();
            let end = utc("2026-01-01T00:00:00Z") + Duration::minutes(offset_min);
            match p.next_attempt(outcome, attempts, end, &w, seed) {
                Decision::Retry { at } => {
                    prop_assert!(outcome != Outcome::Completed);
                    prop_assert!(attempts < 4);
                    prop_assert!(w.is_allowed(at));
                    prop_assert!(at >= end + p.jittered_backoff(attempts.max(1), seed));
                }
                Decision::Final { reason } => {
                    prop_assert!(outcome == Outcome::Completed || attempts >= 4, "{reason:?}");
                }
            }
        }
    }
}
