//! Looking an attempt up at the carrier when the gateway does not know how it went: the
//! carrier's answer to the dial was lost, the worker died between dialling and recording
//! the carrier's id, or the call's status callbacks never came.
//!
//! What the carrier reports is applied to the call (the id, the status, who answered, the
//! length); a final status is then settled by the next reconcile round. A call the carrier
//! has no record of was never placed: the attempt is undone (not counted) and the job goes
//! back to the queue.

use super::worker::{Ctx, duration_us, record_event};
use crate::control::dial::{CarrierName, DialError, FindCall};
use crate::store::call_records::CarrierReport;
use crate::store::calls::{Call, CallStatus};
use crate::store::dial_jobs::DialJob;
use crate::store::{Scope, StoreError, now_us};

/// How long an attempt the carrier never got waits before the job is dialled again.
const NOT_PLACED_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a lookup did not settle anything.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The carrier could not say.
    #[error("the carrier could not say: {0}")]
    Carrier(#[from] DialError),
}

/// Looks `call` (the attempt in flight of `job`) up at its carrier and applies the answer.
pub(crate) async fn lookup_attempt(
    ctx: &Ctx,
    job: &DialJob,
    call: &Call,
) -> Result<(), LookupError> {
    let Some(carrier) = CarrierName::parse(&call.carrier) else {
        return Err(LookupError::Carrier(DialError::Unsupported(format!(
            "unknown carrier {:?}",
            call.carrier
        ))));
    };
    let find = FindCall {
        sid: call.carrier_sid.clone(),
        to: call.to.clone(),
        from: call.from.clone(),
        placed_after_us: call.created_us,
        call_id: call.id.to_string(),
    };
    let store = &ctx.deps.store;
    let scope = Scope::Tenant(job.tenant_id);
    match ctx.deps.plane.carriers.find(carrier, &find).await? {
        Some(state) => {
            let report = CarrierReport {
                carrier_sid: Some(state.sid.clone()),
                answered_by: state.answered_by.clone(),
                duration_secs: state.duration_secs,
                ..CarrierReport::default()
            };
            store.record_carrier_report(scope, call.id, &report).await?;
            let now = store
                .advance_call_status(scope, call.id, state.status)
                .await?;
            tracing::info!(job_id = %job.id, call_id = %call.id, sid = %state.sid,
                status = now.status.as_str(), "dialer: attempt found at the carrier");
            let data = serde_json::json!({
                "job_id": job.id, "sid": state.sid, "status": state.status.as_str(),
            });
            record_event(ctx, job, call.id, "carrier_lookup", &data).await;
        }
        None if call.carrier_sid.is_none() => {
            let due = now_us() + duration_us(NOT_PLACED_RETRY);
            let undone = store
                .abandon_attempt(&job.id, &call.id.to_string(), due, "not placed")
                .await?;
            if undone {
                tracing::info!(job_id = %job.id, call_id = %call.id,
                    "dialer: the carrier has no such call; the attempt is undone");
                let data = serde_json::json!({"job_id": job.id, "found": false});
                record_event(ctx, job, call.id, "carrier_lookup", &data).await;
            }
        }
        None => {
            // The carrier had the call (we recorded its id) but no longer knows it.
            let report = CarrierReport {
                error: Some("the carrier no longer knows the call".to_owned()),
                ..CarrierReport::default()
            };
            store.record_carrier_report(scope, call.id, &report).await?;
            store
                .advance_call_status(scope, call.id, CallStatus::Failed)
                .await?;
        }
    }
    Ok(())
}
