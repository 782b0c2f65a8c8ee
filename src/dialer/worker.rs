//! The dial worker pool: takes due campaign jobs from the queue and dials them.
//!
//! One [`Dialer`] per process runs:
//! - the **claim loop**: claims as many due jobs as it has free slots (`concurrency`), and
//!   dials each in a task of its own: calling window (campaign window in the contact's time
//!   zone; outside → given back for the next opening), agent and prompts prepared ahead
//!   (a missing variable ends the job `missing_variables` undialled), the carrier's
//!   calls-per-second limiter, the attempt's call row, then the carrier request;
//! - the **lease keeper**: renews the leases of the jobs this process holds;
//! - the **reconciler** ([`super::reconcile`]) and the **SMS sender** ([`super::sms`]).
//!
//! A carrier refusal fails the attempt at once (and the retry policy decides); an unknown
//! outcome leaves it `dialing` for the reconciler's carrier lookup; an unreachable carrier
//! got nothing, so the attempt is undone and the job retried shortly. [`Dialer::stop`] stops
//! claiming, gives back claimed jobs not yet dialled and waits for the requests in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::limiter::CpsLimiters;
use super::metrics::DialerMetrics;
use super::sms::SmsSender;
use super::window::{CallingWindow, CallingWindowConfig};
use crate::call::CallId;
use crate::call::registry::{OutboundPlan, Registry};
use crate::config::DialerSettings;
use crate::control::call_plane::{CallPlane, ResolvedAgent, render_voicemail};
use crate::control::dial::{CarrierName, DialError, MachineDetection, PlaceCall, call_urls};
use crate::store::call_records::{CallSetup, CarrierReport};
use crate::store::calls::{Call, CallStatus, Direction, NewCall};
use crate::store::dial_jobs::DialJob;
use crate::store::{Scope, Store, now_us};

/// Most jobs claimed in one transaction.
const MAX_CLAIM_BATCH: u32 = 100;
/// How long an attempt the carrier never got waits before the job is dialled again.
const UNPLACED_RETRY: Duration = Duration::from_secs(30);
/// How long a job that cannot be prepared now (no voice, store trouble) waits.
const PREPARE_RETRY: Duration = Duration::from_secs(60);

/// What the dialer needs from the gateway.
#[derive(Clone)]
pub struct DialerDeps {
    /// The queue and the calls.
    pub store: Store,
    /// Agents, tenants' scripts, carriers and the live event hub.
    pub plane: Arc<CallPlane>,
    /// Where dialled calls are registered for their media stream.
    pub registry: Arc<Registry>,
    /// The base URL carriers reach the gateway on (`VOICEGW_PUBLIC_URL`).
    pub public_url: String,
    /// The calls-per-second limiter of each carrier account.
    pub limiters: CpsLimiters,
    /// Sends SMS fallbacks (`None`: due texts wait for a process that can send them).
    pub sms: Option<Arc<dyn SmsSender>>,
    /// The dialer's metrics.
    pub metrics: DialerMetrics,
}

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct DialerOptions {
    /// This process's lease owner name (unique per process).
    pub worker_id: String,
    /// Most jobs worked on at once.
    pub concurrency: u32,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// How often an idle claim loop, the reconciler and the SMS sender look for work.
    pub poll: Duration,
    /// How long an unfinished attempt's call may go without a change before it is looked
    /// up at the carrier (at most once per this period) (s).
    pub stale_after_secs: i64,
    /// How long an attempt with no carrier id may go without a change before it is looked
    /// up at the carrier (s).
    pub unplaced_after_secs: i64,
    /// Most campaign calls live at once per tenant, on top of each tenant's own cap.
    pub max_live_calls_per_tenant: Option<u32>,
}

impl DialerOptions {
    /// The options `settings` give, with a fresh worker id.
    pub fn from_settings(settings: &DialerSettings) -> DialerOptions {
        DialerOptions {
            worker_id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            concurrency: settings.concurrency.max(1),
            lease: Duration::from_secs(settings.lease_secs.max(1)),
            poll: Duration::from_millis(settings.poll_ms.max(10)),
            stale_after_secs: i64::try_from(settings.stale_after_secs).unwrap_or(i64::MAX),
            unplaced_after_secs: i64::try_from(settings.unplaced_after_secs).unwrap_or(i64::MAX),
            max_live_calls_per_tenant: settings.max_live_calls_per_tenant,
        }
    }
}

/// The running pool; [`Dialer::stop`] ends it gracefully.
pub struct Dialer {
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

/// Shared by the pool's tasks.
pub(crate) struct Ctx {
    pub(crate) deps: DialerDeps,
    pub(crate) options: DialerOptions,
    pub(crate) stop: CancellationToken,
    /// The attempts this process is placing (call row written, carrier request not yet
    /// answered): never looked up meanwhile, the carrier may not have them yet.
    pub(crate) placing: dashmap::DashSet<CallId>,
}

/// Marks an attempt as being placed by this process until dropped.
struct Placing<'a> {
    ctx: &'a Ctx,
    call: CallId,
}

impl<'a> Placing<'a> {
    fn new(ctx: &'a Ctx, call: CallId) -> Placing<'a> {
        ctx.placing.insert(call);
        Placing { ctx, call }
    }
}

impl Drop for Placing<'_> {
    fn drop(&mut self) {
        self.ctx.placing.remove(&self.call);
    }
}

impl Dialer {
    /// Starts the pool on the current runtime.
    pub fn spawn(deps: DialerDeps, options: DialerOptions) -> Dialer {
        let stop = CancellationToken::new();
        let ctx = Arc::new(Ctx {
            deps,
            options,
            stop: stop.clone(),
            placing: dashmap::DashSet::new(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(claim_loop(ctx.clone()));
        tasks.spawn(lease_keeper(ctx.clone()));
        tasks.spawn(super::reconcile::reconcile_loop(ctx.clone()));
        tasks.spawn(super::reconcile::sms_loop(ctx));
        tracing::info!("dialer started");
        Dialer { stop, tasks }
    }

    /// Stops claiming, gives back the jobs claimed and not dialled, waits for the carrier
    /// requests in flight, then stops the reconciler and the SMS sender.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "a dialer task failed");
            }
        }
        tracing::info!("dialer stopped");
    }
}

/// Claims due jobs while slots are free, one task per job.
async fn claim_loop(ctx: Arc<Ctx>) {
    let slots = Arc::new(Semaphore::new(ctx.options.concurrency as usize));
    let mut jobs: JoinSet<()> = JoinSet::new();
    let lease_us = duration_us(ctx.options.lease);
    while !ctx.stop.is_cancelled() {
        while jobs.try_join_next().is_some() {}
        let free = slots.available_permits() as u32;
        if free == 0 {
            tokio::select! {
                _ = jobs.join_next() => {}
                () = ctx.stop.cancelled() => break,
            }
            continue;
        }
        let now = now_us();
        let claimed = ctx
            .deps
            .store
            .claim_jobs_capped(
                &ctx.options.worker_id,
                now,
                now + lease_us,
                free.min(MAX_CLAIM_BATCH),
                ctx.options.max_live_calls_per_tenant.map(i64::from),
            )
            .await;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "dialer: claiming jobs failed");
                ctx.deps
                    .metrics
                    .dial_errors
                    .with_label_values(&["store"])
                    .inc();
                Vec::new()
            }
        };
        let idle = claimed.is_empty();
        ctx.deps.metrics.jobs_claimed.inc_by(claimed.len() as u64);
        for job in claimed {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                // Cannot happen (claimed ≤ free), but never dial beyond the slots.
                give_back(&ctx, &job, now_us(), "no free slot").await;
                continue;
            };
            let ctx = ctx.clone();
            jobs.spawn(async move {
                dial_job(&ctx, job).await;
                drop(permit);
            });
        }
        if idle {
            tokio::select! {
                () = tokio::time::sleep(ctx.options.poll) => {}
                () = ctx.stop.cancelled() => break,
            }
        }
    }
    // Jobs waiting on the limiter give themselves back; requests in flight finish.
    while jobs.join_next().await.is_some() {}
}

/// Keeps this process's leases alive.
async fn lease_keeper(ctx: Arc<Ctx>) {
    let every = (ctx.options.lease / 3).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = ctx.stop.cancelled() => return,
        }
        let until = now_us() + duration_us(ctx.options.lease);
        if let Err(error) = ctx
            .deps
            .store
            .renew_leases(&ctx.options.worker_id, until)
            .await
        {
            tracing::warn!(%error, "dialer: renewing leases failed");
        }
    }
}

/// Microseconds of `d`.
pub(crate) fn duration_us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The contact's calling window: the campaign's, in the contact's own zone when it has one.
pub fn contact_window(job: &DialJob) -> Result<CallingWindow, String> {
    let mut config: CallingWindowConfig = serde_json::from_str(&job.campaign.calling_window)
        .map_err(|e| format!("calling window: {e}"))?;
    if let Some(zone) = job.timezone.as_deref().filter(|z| !z.is_empty()) {
        config.timezone = zone.to_owned();
    }
    CallingWindow::new(&config).map_err(|e| e.to_string())
}

/// Gives `job` back to the queue, due at `due_us`, logging why.
async fn give_back(ctx: &Ctx, job: &DialJob, due_us: i64, why: &str) {
    tracing::debug!(job_id = %job.id, why, "dialer: job given back");
    if let Err(error) = ctx
        .deps
        .store
        .give_back(&job.id, &ctx.options.worker_id, due_us)
        .await
    {
        tracing::warn!(job_id = %job.id, %error, "dialer: giving a job back failed");
    }
}

/// Ends `job` undialled with `reason`.
async fn finish_undialled(ctx: &Ctx, job: &DialJob, reason: &'static str, detail: &str) {
    tracing::info!(job_id = %job.id, reason, detail, "dialer: job ends without a dial");
    match ctx
        .deps
        .store
        .finish_claimed(&job.id, &ctx.options.worker_id, reason)
        .await
    {
        Ok(true) => ctx
            .deps
            .metrics
            .jobs_final
            .with_label_values(&[reason])
            .inc(),
        Ok(false) => {}
        Err(error) => tracing::warn!(job_id = %job.id, %error, "dialer: ending a job failed"),
    }
}

/// The agent a campaign's calls run, with its prompts prepared for this contact.
async fn prepare_agent(
    ctx: &Ctx,
    job: &DialJob,
    vars: &BTreeMap<String, String>,
) -> Result<ResolvedAgent, crate::control::error::ApiError> {
    let plane = &ctx.deps.plane;
    match job.campaign.agent.strip_prefix("script:") {
        Some(name) if job.campaign.script_id.is_some() => {
            let agent = plane
                .tenant_script(&ctx.deps.store, job.tenant_id, name, vars)
                .await?;
            plane
                .prepare_tenant_script(&ctx.deps.store, job.tenant_id, name, vars)
                .await?;
            Ok(agent)
        }
        _ => plane.catalog_agent(&job.campaign.agent),
    }
}

/// Works one claimed job to a placed call (or gives it back / ends it).
async fn dial_job(ctx: &Ctx, job: DialJob) {
    let now: DateTime<Utc> = Utc::now();
    let window = match contact_window(&job) {
        Ok(window) => window,
        Err(error) => return finish_undialled(ctx, &job, "invalid_window", &error).await,
    };
    if !window.is_allowed(now) {
        return match window.next_allowed(now) {
            Some(at) => give_back(ctx, &job, at.timestamp_micros(), "outside the window").await,
            None => finish_undialled(ctx, &job, "no_window", "the window never opens").await,
        };
    }
    let Some(carrier) = CarrierName::parse(&job.campaign.carrier) else {
        return finish_undialled(ctx, &job, "invalid_carrier", &job.campaign.carrier).await;
    };
    let Some(from) = caller_id(&job) else {
        return finish_undialled(ctx, &job, "no_caller_id", "the campaign has no numbers").await;
    };
    let vars = job.merged_variables();
    let agent = match prepare_agent(ctx, &job, &vars).await {
        Ok(agent) => agent,
        Err(error) => {
            return match error.code {
                "missing_variables" => {
                    finish_undialled(ctx, &job, "missing_variables", &error.message).await
                }
                "unknown_script" | "script_unusable" | "unknown_agent" => {
                    finish_undialled(ctx, &job, "agent_unusable", &error.message).await
                }
                _ => {
                    tracing::warn!(job_id = %job.id, code = error.code, message = %error.message,
                        "dialer: cannot prepare the call now");
                    let due = now_us() + duration_us(PREPARE_RETRY);
                    give_back(ctx, &job, due, "preparing failed").await
                }
            };
        }
    };
    if ctx.stop.is_cancelled() {
        return give_back(ctx, &job, now_us(), "stopping").await;
    }
    let new = NewCall {
        direction: Direction::Outbound,
        from,
        to: job.phone.clone(),
        carrier: carrier.as_str().to_owned(),
        carrier_sid: None,
    };
    let setup = CallSetup {
        agent: agent.agent.clone(),
        script_id: agent.script_id.clone(),
        variables: vars.clone(),
        idempotency_key: None,
        request_hash: None,
    };
    let call = match ctx
        .deps
        .store
        .start_attempt(&job.id, &ctx.options.worker_id, now_us(), &new, &setup)
        .await
    {
        Ok(Some(call)) => call,
        Ok(None) => {
            tracing::info!(job_id = %job.id, "dialer: lease lost before dialling");
            return;
        }
        Err(error) => {
            tracing::warn!(job_id = %job.id, %error, "dialer: starting an attempt failed");
            ctx.deps
                .metrics
                .dial_errors
                .with_label_values(&["store"])
                .inc();
            return give_back(ctx, &job, now_us(), "store error").await;
        }
    };
    let _placing = Placing::new(ctx, call.id);
    match outbound_plan(&job, &vars) {
        Some(plan) => ctx.deps.plane.expect_outbound(
            &ctx.deps.registry,
            call.id,
            job.tenant_id,
            &agent,
            &vars,
            plan,
        ),
        None => ctx
            .deps
            .plane
            .expect(&ctx.deps.registry, call.id, job.tenant_id, &agent, &vars),
    }
    // The limiter right before the request (so starts are paced as the carrier sees
    // them), unless the pool is stopping: then the attempt is undone, never sent.
    let limiter = ctx.deps.limiters.for_carrier(carrier);
    let waited = std::time::Instant::now();
    tokio::select! {
        () = limiter.acquire() => {}
        () = ctx.stop.cancelled() => {
            let undone = ctx.deps.store
                .abandon_attempt(&job.id, &call.id.to_string(), now_us(), "not placed: stopping")
                .await;
            if let Err(error) = undone {
                tracing::warn!(job_id = %job.id, %error, "dialer: undoing an attempt failed");
            }
            return;
        }
    }
    ctx.deps
        .metrics
        .limiter_wait_seconds
        .observe(waited.elapsed().as_secs_f64());
    let place = place_request(ctx, &job, &call, carrier);
    let result = ctx.deps.plane.carriers.place(carrier, &place).await;
    placed(ctx, &job, &call, result).await;
}

/// The answering-machine plan of a campaign call (as the call directory rebuilds it for a
/// call served by another gateway): detection when the campaign asks for it, with its
/// voicemail message rendered for the contact (left out, and logged, when it cannot be).
fn outbound_plan(job: &DialJob, vars: &BTreeMap<String, String>) -> Option<OutboundPlan> {
    job.campaign.machine_detection.as_ref()?;
    let message = job
        .campaign
        .voicemail_message
        .as_deref()
        .and_then(|template| {
            render_voicemail(template, vars)
                .map_err(|error| {
                    tracing::warn!(job_id = %job.id, message = %error.message,
                    "dialer: the campaign's voicemail message cannot be rendered")
                })
                .ok()
        });
    Some(OutboundPlan::detect(message))
}

/// The number the job's next attempt is placed from: the campaign's numbers in turn.
fn caller_id(job: &DialJob) -> Option<String> {
    let ids = &job.campaign.caller_ids;
    if ids.is_empty() {
        return None;
    }
    let turn = (job.position.unsigned_abs() + job.attempts.unsigned_abs()) as usize % ids.len();
    ids.get(turn).cloned()
}

/// The carrier request of `call`.
fn place_request(ctx: &Ctx, job: &DialJob, call: &Call, carrier: CarrierName) -> PlaceCall {
    let public = &ctx.deps.public_url;
    let call_id = call.id.to_string();
    let (answer_url, stream_url, status_callback, amd_callback) = call_urls(public, &call_id);
    let machine_detection = match job.campaign.machine_detection.as_deref() {
        Some("enable") => Some(MachineDetection::Enable),
        Some("detect_message_end") => Some(MachineDetection::DetectMessageEnd),
        _ => None,
    };
    PlaceCall {
        to: call.to.clone(),
        from: call.from.clone(),
        answer_url,
        stream_url,
        status_callback: match carrier {
            CarrierName::Twilio => status_callback,
            CarrierName::Exotel => format!("{}/exotel/status", public.trim_end_matches('/')),
        },
        // Asynchronous detection, as POST /v1/calls: the stream starts at once and the
        // carrier's verdict is forwarded to the live call.
        amd_callback: match (carrier, machine_detection) {
            (CarrierName::Twilio, Some(_)) => Some(amd_callback),
            _ => None,
        },
        machine_detection,
        timeout_secs: job
            .campaign
            .timeout_secs
            .and_then(|t| u32::try_from(t).ok()),
        time_limit_secs: job
            .campaign
            .time_limit_secs
            .and_then(|t| u32::try_from(t).ok()),
        record: job.campaign.record,
        call_id,
    }
}

/// Records what the carrier said to the attempt's request.
async fn placed(ctx: &Ctx, job: &DialJob, call: &Call, result: Result<String, DialError>) {
    let store = &ctx.deps.store;
    let scope = Scope::Tenant(job.tenant_id);
    let attempt = job.attempts + 1;
    match result {
        Ok(sid) => {
            ctx.deps.metrics.calls_placed.inc();
            let report = CarrierReport {
                carrier_sid: Some(sid.clone()),
                ..CarrierReport::default()
            };
            if let Err(error) = store.record_carrier_report(scope, call.id, &report).await {
                tracing::error!(call_id = %call.id, %error, "dialer: recording the carrier id failed");
            }
            let data = serde_json::json!({
                "job_id": job.id, "attempt": attempt, "to": call.to, "from": call.from, "sid": sid,
            });
            record_event(ctx, job, call.id, "dial_attempt", &data).await;
        }
        Err(error @ DialError::Unreachable(_)) => {
            ctx.deps
                .metrics
                .dial_errors
                .with_label_values(&["unreachable"])
                .inc();
            let message = format!("not placed: {error}");
            tracing::warn!(job_id = %job.id, call_id = %call.id, %message, "dialer: carrier unreachable");
            let due = now_us() + duration_us(UNPLACED_RETRY);
            match store
                .abandon_attempt(&job.id, &call.id.to_string(), due, &message)
                .await
            {
                Ok(_) => {
                    let data =
                        serde_json::json!({"code": "carrier_unreachable", "message": message});
                    record_event(ctx, job, call.id, "dial_failed", &data).await;
                }
                Err(error) => {
                    tracing::error!(job_id = %job.id, %error, "dialer: undoing an attempt failed");
                }
            }
        }
        Err(error @ (DialError::OutcomeUnknown(_) | DialError::NotLive)) => {
            ctx.deps
                .metrics
                .dial_errors
                .with_label_values(&["outcome_unknown"])
                .inc();
            let message = error.to_string();
            tracing::warn!(job_id = %job.id, call_id = %call.id, %message,
                "dialer: the carrier's answer is unknown; the reconciler looks the call up");
            let report = CarrierReport {
                error: Some(message.clone()),
                ..CarrierReport::default()
            };
            if let Err(error) = store.record_carrier_report(scope, call.id, &report).await {
                tracing::error!(call_id = %call.id, %error, "dialer: recording a dial error failed");
            }
            let data = serde_json::json!({"code": "carrier_unreachable", "message": message});
            record_event(ctx, job, call.id, "dial_failed", &data).await;
        }
        Err(error) => {
            let kind = match &error {
                DialError::NotConfigured(_) => "not_configured",
                DialError::Unsupported(_) => "unsupported",
                _ => "refused",
            };
            ctx.deps
                .metrics
                .dial_errors
                .with_label_values(&[kind])
                .inc();
            let message = error.to_string();
            tracing::warn!(job_id = %job.id, call_id = %call.id, %message, "dialer: carrier refused");
            let report = CarrierReport {
                error: Some(message.clone()),
                ..CarrierReport::default()
            };
            let failed = async {
                store.record_carrier_report(scope, call.id, &report).await?;
                store
                    .advance_call_status(scope, call.id, CallStatus::Failed)
                    .await
            };
            match failed.await {
                Ok(call) => {
                    let data = serde_json::json!({"code": "carrier_refused", "message": message});
                    record_event(ctx, job, call.id, "dial_failed", &data).await;
                    if let Err(error) = super::reconcile::settle(ctx, job, &call).await {
                        tracing::warn!(job_id = %job.id, %error,
                            "dialer: settling a refused attempt failed; the reconciler retries");
                    }
                }
                Err(error) => {
                    tracing::error!(call_id = %call.id, %error, "dialer: failing a refused call failed");
                }
            }
        }
    }
}

/// Records a dialer CallEvent on `call` and publishes it to live viewers.
pub(crate) async fn record_event(
    ctx: &Ctx,
    job: &DialJob,
    call: CallId,
    kind: &str,
    data: &serde_json::Value,
) {
    match ctx
        .deps
        .store
        .record_control_event(Scope::Tenant(job.tenant_id), call, kind, data)
        .await
    {
        Ok(Some(row)) => ctx.deps.plane.hub.publish(std::slice::from_ref(&row)),
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(call_id = %call, kind, %error, "dialer: recording an event failed")
        }
    }
}
