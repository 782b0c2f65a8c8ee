//! The reconciler: settles attempts whose call is over, takes over jobs of dead workers,
//! looks up attempts the carrier never reported on, and sends due SMS fallbacks.
//!
//! Each round (every `poll`):
//! 1. `dialing` jobs whose call is final → the attempt's outcome ([`super::outcome`]) → the
//!    retry policy → [`Store::finish_attempt`] (applies once, whoever gets there first);
//! 2. expired leases: `claimed` → back to `pending` (nothing was sent); `dialing` → adopted by
//!    this worker, and an attempt with no carrier id is looked up at the carrier;
//! 3. stale attempts (not over, no change for `stale_after_secs`; no carrier id and no
//!    change for `unplaced_after_secs`) → looked up at the carrier, its answer applied (a
//!    call still live is left alone). Every look counts as a change of the call, so each
//!    attempt is looked up at most once per period;
//! 4. SMS sends whose lease expired → `unknown` (never sent twice).
//!
//! [`Store::finish_attempt`]: crate::store::Store::finish_attempt

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::outcome::{CampaignState, attempt_outcome, next_step, seed_of};
use super::retry::{RetryPolicy, RetryPolicyConfig};
use super::sms::{SmsError, render_sms};
use super::worker::{Ctx, contact_window, duration_us, record_event};
use crate::store::call_records::CarrierReport;
use crate::store::calls::Call;
use crate::store::dial_jobs::{AttemptEnd, DialJob, JobState, SmsResult};
use crate::store::{Scope, StoreError, now_us};

/// Most rows one reconcile step handles per round.
const BATCH: u32 = 500;

/// Settles the attempt `call` (final) of `job`: the retry decision, applied once, with its
/// CallEvent. `Ok(false)` when the call is not over or the job has moved on.
pub(crate) async fn settle(ctx: &Ctx, job: &DialJob, call: &Call) -> Result<bool, StoreError> {
    let Some(outcome) = attempt_outcome(call) else {
        return Ok(false);
    };
    let ended_at = call
        .ended_us
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .unwrap_or_else(Utc::now);
    let attempts = u32::try_from(job.attempts.max(1)).unwrap_or(u32::MAX);
    let campaign = CampaignState {
        status: &job.campaign.status,
        ends_at_us: job.campaign.ends_at_us,
        has_sms: job.campaign.sms_fallback.is_some(),
    };
    let policy = serde_json::from_str::<RetryPolicyConfig>(&job.campaign.retry_policy)
        .map_err(|e| e.to_string())
        .and_then(|config| RetryPolicy::new(config).map_err(|e| e.to_string()));
    let end = match (policy, contact_window(job)) {
        (Ok(policy), Ok(window)) => next_step(
            outcome,
            attempts,
            ended_at,
            (&policy, &window),
            seed_of(&job.id),
            campaign,
        ),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(job_id = %job.id, %error, "dialer: the campaign's rules are unusable");
            AttemptEnd::Final {
                reason: "invalid_campaign".to_owned(),
                sms_due: false,
            }
        }
    };
    let applied = ctx
        .deps
        .store
        .finish_attempt(&job.id, &call.id.to_string(), outcome.as_str(), &end)
        .await?;
    if !applied {
        return Ok(false);
    }
    match &end {
        AttemptEnd::Retry { due_us } => {
            ctx.deps.metrics.retries.inc();
            let at = DateTime::<Utc>::from_timestamp_micros(*due_us)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            let data = serde_json::json!({
                "job_id": job.id, "outcome": outcome.as_str(), "attempt": job.attempts,
                "at": at,
            });
            record_event(ctx, job, call.id, "retry_scheduled", &data).await;
        }
        AttemptEnd::Final { reason, sms_due } => {
            ctx.deps
                .metrics
                .jobs_final
                .with_label_values(&[reason.as_str()])
                .inc();
            let data = serde_json::json!({
                "job_id": job.id, "outcome": outcome.as_str(), "attempts": job.attempts,
                "reason": reason, "sms_due": sms_due,
            });
            record_event(ctx, job, call.id, "job_final", &data).await;
        }
    }
    Ok(true)
}

/// Runs reconcile rounds until the pool stops.
pub(crate) async fn reconcile_loop(ctx: Arc<Ctx>) {
    loop {
        if let Err(error) = reconcile_once(&ctx).await {
            tracing::warn!(%error, "dialer: a reconcile round failed");
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.options.poll) => {}
            () = ctx.stop.cancelled() => return,
        }
    }
}

/// One reconcile round.
pub(crate) async fn reconcile_once(ctx: &Ctx) -> Result<(), StoreError> {
    let store = &ctx.deps.store;
    for (job, call) in store.dialing_jobs_with_final_calls(BATCH).await? {
        if let Err(error) = settle(ctx, &job, &call).await {
            tracing::warn!(job_id = %job.id, %error, "dialer: settling an attempt failed");
        }
    }
    let now = now_us();
    let lease_until = now + duration_us(ctx.options.lease);
    for job in store.expired_leases(now, BATCH).await? {
        match job.state {
            JobState::Claimed if store.take_over_claimed(&job.id, now).await? => {
                tracing::info!(job_id = %job.id, owner = ?job.lease_owner,
                    "dialer: took over a claimed job (back to pending)");
            }
            JobState::Dialing
                if store
                    .adopt_dialing(&job.id, &ctx.options.worker_id, now, lease_until)
                    .await? =>
            {
                tracing::info!(job_id = %job.id, owner = ?job.lease_owner,
                    "dialer: adopted an attempt of a stopped worker");
            }
            _ => {}
        }
    }
    let stale = store
        .stale_attempts(
            now,
            &ctx.options.worker_id,
            (
                ctx.options.stale_after_secs,
                ctx.options.unplaced_after_secs,
            ),
            BATCH,
        )
        .await?;
    for (job, call) in stale {
        if ctx.placing.contains(&call.id) {
            continue;
        }
        if let Err(error) = super::lookup::lookup_attempt(ctx, &job, &call).await {
            tracing::warn!(job_id = %job.id, %error, "dialer: looking an attempt up failed");
            // Counts as a look: the next one waits a full period.
            if let Err(error) = store
                .record_carrier_report(
                    Scope::Tenant(job.tenant_id),
                    call.id,
                    &CarrierReport::default(),
                )
                .await
            {
                tracing::warn!(call_id = %call.id, %error, "dialer: noting a lookup failed");
            }
        }
    }
    let completed = store.complete_finished_campaigns().await?;
    if completed > 0 {
        tracing::info!(completed, "dialer: campaigns completed");
    }
    let expired = store.expire_sms(now).await?;
    if expired > 0 {
        ctx.deps
            .metrics
            .sms
            .with_label_values(&["unknown"])
            .inc_by(expired);
    }
    Ok(())
}

/// Sends due SMS fallbacks until the pool stops.
pub(crate) async fn sms_loop(ctx: Arc<Ctx>) {
    let Some(_) = ctx.deps.sms else {
        return;
    };
    loop {
        if let Err(error) = send_due_sms(&ctx).await {
            tracing::warn!(%error, "dialer: sending SMS fallbacks failed");
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.options.poll) => {}
            () = ctx.stop.cancelled() => return,
        }
    }
}

/// Claims the due SMS fallbacks and sends them; returns how many were claimed.
pub(crate) async fn send_due_sms(ctx: &Ctx) -> Result<usize, StoreError> {
    let Some(sender) = &ctx.deps.sms else {
        return Ok(0);
    };
    let store = &ctx.deps.store;
    let until = now_us() + duration_us(ctx.options.lease);
    let jobs = store.claim_sms(&ctx.options.worker_id, until, 100).await?;
    let claimed = jobs.len();
    for job in jobs {
        let template = job.campaign.sms_fallback.clone().unwrap_or_default();
        let from = job.campaign.caller_ids.first().cloned().unwrap_or_default();
        let sent = match render_sms(&template, &job.merged_variables()) {
            Ok(body) => sender.send(&from, &job.phone, &body).await,
            Err(missing) => Err(SmsError::Refused(missing.to_string())),
        };
        let (result, data, label) = match &sent {
            Ok(sid) => (
                SmsResult::Sent(sid.clone()),
                serde_json::json!({"job_id": job.id, "to": job.phone, "sid": sid}),
                "sent",
            ),
            Err(SmsError::Refused(error)) => (
                SmsResult::Failed,
                serde_json::json!({"job_id": job.id, "to": job.phone, "error": error}),
                "failed",
            ),
            Err(SmsError::Unknown(error)) => (
                SmsResult::Unknown,
                serde_json::json!({"job_id": job.id, "to": job.phone, "error": error}),
                "unknown",
            ),
        };
        ctx.deps.metrics.sms.with_label_values(&[label]).inc();
        store
            .finish_sms(&job.id, &ctx.options.worker_id, &result)
            .await?;
        if let Some(call) = job
            .call_id
            .as_deref()
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
        {
            record_event(ctx, &job, crate::call::CallId(call), "sms_fallback", &data).await;
        }
    }
    Ok(claimed)
}
