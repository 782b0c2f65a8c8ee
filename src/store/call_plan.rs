//! What a campaign call needs from its campaign when a gateway other than the dialing one
//! serves it: the answering-machine settings, found through `calls.job_id →
//! dial_jobs.campaign_id → campaigns`.

use sqlx::Row;

use super::{Store, StoreError};
use crate::call::CallId;

/// A campaign call's answering-machine settings, as stored on its campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignCallPlan {
    /// `enable` | `detect_message_end`; `None`: no machine detection.
    pub machine_detection: Option<String>,
    /// The voicemail message template (`{{ variable }}` slots); `None`: hang up on machines.
    pub voicemail_message: Option<String>,
}

impl Store {
    /// The settings of the campaign `call_id` was dialed for; `None` when the call is not a
    /// campaign's (no `job_id`, or its job or campaign is gone).
    pub async fn campaign_call_plan(
        &self,
        call_id: CallId,
    ) -> Result<Option<CampaignCallPlan>, StoreError> {
        let row = sqlx::query(
            "SELECT c.machine_detection, c.voicemail_message FROM calls k \
             JOIN dial_jobs j ON j.id = k.job_id \
             JOIN campaigns c ON c.id = j.campaign_id \
             WHERE k.id = $1",
        )
        .bind(call_id.to_string())
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::db("reading a campaign call's plan"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let get = |e: sqlx::Error| StoreError::db("reading a campaign call's plan")(e);
        Ok(Some(CampaignCallPlan {
            machine_detection: row.try_get::<Option<String>, _>(0).map_err(get)?,
            voicemail_message: row.try_get::<Option<String>, _>(1).map_err(get)?,
        }))
    }
}
