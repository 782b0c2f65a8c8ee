//! How a dial attempt ended, read from its final call row, and what the job does next.
//!
//! Status `busy` → busy; `no_answer` → no answer; `failed`/`canceled` → failed; `completed`
//! with outcome `voicemail` (or `machine_no_message`), or answered by a machine or fax →
//! voicemail; otherwise `completed` → completed.

use chrono::{DateTime, Utc};

use super::retry::{Decision, FinalReason, Outcome, RetryPolicy};
use super::window::CallingWindow;
use crate::store::calls::{Call, CallStatus};
use crate::store::dial_jobs::AttemptEnd;

/// The attempt's outcome, or `None` while the call is not over.
pub fn attempt_outcome(call: &Call) -> Option<Outcome> {
    match call.status {
        CallStatus::Queued | CallStatus::Ringing | CallStatus::InProgress => None,
        CallStatus::Busy => Some(Outcome::Busy),
        CallStatus::NoAnswer => Some(Outcome::NoAnswer),
        CallStatus::Failed | CallStatus::Canceled => Some(Outcome::Failed),
        CallStatus::Completed => {
            let voicemail = matches!(
                call.outcome.as_deref(),
                Some("voicemail" | "machine_no_message")
            );
            let machine = call
                .answered_by
                .as_deref()
                .is_some_and(|by| by.starts_with("machine") || by.starts_with("fax"));
            Some(if voicemail || machine {
                Outcome::Voicemail
            } else {
                Outcome::Completed
            })
        }
    }
}

/// The stored `final_reason` of a retry policy's final decision.
pub fn final_reason_label(reason: FinalReason) -> &'static str {
    match reason {
        FinalReason::Completed => "completed",
        FinalReason::NotRetried(_) => "not_retried",
        FinalReason::MaxAttempts(_) => "max_attempts",
        FinalReason::NoWindow => "no_window",
    }
}

/// Whether a contact whose last attempt ended `outcome` gets the campaign's SMS fallback:
/// nobody picked up (no answer, or the line was busy). A machine that answered heard the
/// voicemail message, or the call hung up on it as the campaign asked.
pub fn sms_due(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::NoAnswer | Outcome::Busy)
}

/// What the campaign around an attempt allows next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CampaignState<'a> {
    /// `running`, `paused`, `canceled`, …
    pub status: &'a str,
    /// Dialing stops at (µs).
    pub ends_at_us: Option<i64>,
    /// The campaign has an SMS fallback.
    pub has_sms: bool,
}

/// The job's next step after an attempt (number `attempts`) that ended `outcome`, per `policy` in
/// `window`, with the jitter seeded by `seed`: a retry at the policy's time, or the end with
/// its reason (a canceled campaign ends every job; a retry past the campaign's end is
/// `campaign_ended`).
pub fn next_step(
    outcome: Outcome,
    attempts: u32,
    ended_at: DateTime<Utc>,
    (policy, window): (&RetryPolicy, &CallingWindow),
    seed: u64,
    campaign: CampaignState<'_>,
) -> AttemptEnd {
    let done = |reason: &str, sms: bool| AttemptEnd::Final {
        reason: reason.to_owned(),
        sms_due: sms && campaign.has_sms && sms_due(outcome),
    };
    if campaign.status == "canceled" {
        return done("campaign_canceled", false);
    }
    match policy.next_attempt(outcome, attempts, ended_at, window, seed) {
        Decision::Retry { at } => {
            let due_us = at.timestamp_micros();
            match campaign.ends_at_us {
                Some(end) if due_us >= end => done("campaign_ended", true),
                _ => AttemptEnd::Retry { due_us },
            }
        }
        Decision::Final { reason } => done(final_reason_label(reason), true),
    }
}

/// A stable 64-bit seed from a job id (FNV-1a), for the retry jitter.
pub fn seed_of(job_id: &str) -> u64 {
    job_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CallId;
    use crate::dialer::retry::RetryPolicyConfig;
    use crate::store::TenantId;
    use crate::store::calls::Direction;

    fn call(status: CallStatus, outcome: Option<&str>, answered_by: Option<&str>) -> Call {
        Call {
            id: CallId::new(),
            tenant_id: TenantId(uuid::Uuid::nil()),
            direction: Direction::Outbound,
            status,
            from: "+14155550100".into(),
            to: "+14155550101".into(),
            carrier: "twilio".into(),
            carrier_sid: None,
            outcome: outcome.map(str::to_owned),
            recording_url: None,
            created_us: 0,
            updated_us: 0,
            answered_us: None,
            ended_us: None,
            agent: "echo".into(),
            script_id: None,
            variables: Default::default(),
            answered_by: answered_by.map(str::to_owned),
            error: None,
            duration_secs: None,
        }
    }

    #[test]
    fn outcomes_follow_the_call_row() {
        assert_eq!(
            attempt_outcome(&call(CallStatus::Ringing, None, None)),
            None
        );
        assert_eq!(
            attempt_outcome(&call(CallStatus::Busy, None, None)),
            Some(Outcome::Busy)
        );
        assert_eq!(
            attempt_outcome(&call(CallStatus::NoAnswer, None, None)),
            Some(Outcome::NoAnswer)
        );
        assert_eq!(
            attempt_outcome(&call(CallStatus::Canceled, None, None)),
            Some(Outcome::Failed)
        );
        assert_eq!(
            attempt_outcome(&call(CallStatus::Failed, None, None)),
            Some(Outcome::Failed)
        );
        assert_eq!(
            attempt_outcome(&call(CallStatus::Completed, Some("voicemail"), None)),
            Some(Outcome::Voicemail)
        );
        assert_eq!(
            attempt_outcome(&call(CallStatus::Completed, None, Some("machine_end_beep"))),
            Some(Outcome::Voicemail)
        );
        assert_eq!(
            attempt_outcome(&call(CallStatus::Completed, None, Some("fax"))),
            Some(Outcome::Voicemail)
        );
        assert_eq!(
            attempt_outcome(&call(CallStatus::Completed, Some("hangup"), Some("human"))),
            Some(Outcome::Completed)
        );
    }

    #[test]
    fn next_steps_follow_policy_and_campaign() {
        let policy = RetryPolicy::new(RetryPolicyConfig {
            max_attempts: 2,
            backoff_secs: vec![60],
            ..RetryPolicyConfig::default()
        })
        .unwrap();
        let window = CallingWindow::always().unwrap();
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let running = CampaignState {
            status: "running",
            ends_at_us: None,
            has_sms: true,
        };
        assert_eq!(
            next_step(Outcome::NoAnswer, 1, now, (&policy, &window), 1, running),
            AttemptEnd::Retry {
                due_us: now.timestamp_micros() + 60_000_000
            }
        );
        assert_eq!(
            next_step(Outcome::NoAnswer, 2, now, (&policy, &window), 1, running),
            AttemptEnd::Final {
                reason: "max_attempts".into(),
                sms_due: true
            }
        );
        let ended = CampaignState {
            ends_at_us: Some(now.timestamp_micros() + 1),
            ..running
        };
        assert_eq!(
            next_step(Outcome::NoAnswer, 1, now, (&policy, &window), 1, ended),
            AttemptEnd::Final {
                reason: "campaign_ended".into(),
                sms_due: true
            }
        );
        let canceled = CampaignState {
            status: "canceled",
            ..running
        };
        assert_eq!(
            next_step(Outcome::NoAnswer, 1, now, (&policy, &window), 1, canceled),
            AttemptEnd::Final {
                reason: "campaign_canceled".into(),
                sms_due: false
            }
        );
        assert_eq!(
            next_step(Outcome::Completed, 1, now, (&policy, &window), 1, running),
            AttemptEnd::Final {
                reason: "completed".into(),
                sms_due: false
            }
        );
        assert_ne!(seed_of("a"), seed_of("b"));
    }
}
