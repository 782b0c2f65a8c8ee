//! The JSON resources of the control plane (they mirror `proto/voicegw.proto` field for field),
//! the request bodies and query strings the routes take, and paging.
//!
//! The operator CLI prints these same types with `--json`.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Principal;
use super::error::ApiError;
use crate::store::catalog::{self, MAX_PAGE};
use crate::store::tenants;
use crate::store::{Scope, TenantId};

/// The page size when none is asked for.
pub const DEFAULT_PAGE: u32 = 50;

/// RFC 3339 (UTC, microseconds) of a time in microseconds since the Unix epoch.
pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A customer of the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    /// Id (UUID).
    pub id: String,
    /// Display name.
    pub name: String,
    /// `OUTBOUND`, `INBOUND` or `FULL`.
    #[schema(example = "FULL")]
    pub plan: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

impl From<&tenants::Tenant> for Tenant {
    fn from(t: &tenants::Tenant) -> Self {
        Tenant {
            id: t.id.to_string(),
            name: t.name.clone(),
            plan: t.plan.as_str().to_string(),
            created_at: rfc3339(t.created_us),
        }
    }
}

/// An API key; `secret` is present only in the answer that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// Id (UUID).
    pub id: String,
    /// Its tenant; absent for SUPERADMIN keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// `AGENT`, `ADMIN` or `SUPERADMIN`.
    #[schema(example = "ADMIN")]
    pub role: String,
    /// Label given at creation.
    pub name: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// When it was revoked (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// The bearer secret: shown once, when the key is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&tenants::ApiKey> for ApiKey {
    fn from(k: &tenants::ApiKey) -> Self {
        ApiKey {
            id: k.id.to_string(),
            tenant_id: k.tenant_id.map(|t| t.to_string()),
            role: k.role.as_str().to_string(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created_at: rfc3339(k.created_us),
            revoked_at: k.revoked_us.map(rfc3339),
            secret: None,
        }
    }
}

/// A tenant's phone number: inbound calls to it run the tenant's script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PhoneNumber {
    /// Id (UUID).
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// The number in E.164.
    #[schema(example = "+14155550100")]
    pub e164: String,
    /// `twilio` or `exotel`.
    #[schema(example = "twilio")]
    pub carrier: String,
    /// The tenant script inbound calls run (its latest version); absent: the default agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

impl From<&catalog::PhoneNumber> for PhoneNumber {
    fn from(n: &catalog::PhoneNumber) -> Self {
        PhoneNumber {
            id: n.id.to_string(),
            tenant_id: n.tenant_id.to_string(),
            e164: n.e164.clone(),
            carrier: n.carrier.clone(),
            script: n.script.clone(),
            created_at: rfc3339(n.created_us),
        }
    }
}

/// One version of a tenant's Destiny-Script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Script {
    /// Id of this version (UUID).
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Name (`[a-z0-9_-]{1,64}`).
    pub name: String,
    /// 1, 2, 3 … per name.
    pub version: u64,
    /// SHA-256 of the canonical form.
    pub hash: String,
    /// The source as uploaded.
    pub source: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

impl From<&catalog::ScriptVersion> for Script {
    fn from(s: &catalog::ScriptVersion) -> Self {
        Script {
            id: s.id.to_string(),
            tenant_id: s.tenant_id.to_string(),
            name: s.name.clone(),
            version: u64::try_from(s.version).unwrap_or_default(),
            hash: s.hash.clone(),
            source: s.source.clone(),
            created_at: rfc3339(s.created_us),
        }
    }
}

/// A problem in a script, at a line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScriptDiagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// `error` or `warning`.
    pub severity: String,
    /// What is wrong.
    pub message: String,
}

impl From<&crate::script::Diagnostic> for ScriptDiagnostic {
    fn from(d: &crate::script::Diagnostic) -> Self {
        ScriptDiagnostic {
            line: d.line,
            col: d.column,
            severity: if d.is_error() { "error" } else { "warning" }.to_string(),
            message: d.message.clone(),
        }
    }
}

/// A stored script version and the warnings its source gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScriptSaved {
    /// The version (new, or the latest when its canonical form did not change).
    #[serde(flatten)]
    pub script: Script,
    /// Warnings: allowed, but probably not meant.
    pub warnings: Vec<ScriptDiagnostic>,
}

/// Every tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    /// Oldest first.
    pub tenants: Vec<Tenant>,
}

/// A page of API keys.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    /// Oldest first.
    pub keys: Vec<ApiKey>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A page of phone numbers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PhoneNumberList {
    /// Oldest first.
    pub numbers: Vec<PhoneNumber>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A page of scripts (the latest version of each name, by name) or of one script's versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScriptList {
    /// By name, or by version.
    pub scripts: Vec<Script>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /v1/tenants`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Display name.
    pub name: String,
    /// `OUTBOUND`, `INBOUND` or `FULL` (default `FULL`).
    #[serde(default)]
    pub plan: Option<String>,
}

/// `PATCH /v1/tenants/{id}`: the fields to change.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// New plan.
    #[serde(default)]
    pub plan: Option<String>,
}

/// `POST /v1/keys`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Label.
    pub name: String,
    /// `AGENT`, `ADMIN` or (SUPERADMIN keys only) `SUPERADMIN`.
    pub role: String,
    /// The tenant (SUPERADMIN keys making a tenant key); a tenant key's own by default.
    #[serde(default)]
    pub tenant_id: Option<uuid::Uuid>,
}

/// `POST /v1/numbers`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNumber {
    /// The number, E.164 (spaces, dashes and parentheses are dropped).
    pub e164: String,
    /// `twilio` or `exotel`.
    pub carrier: String,
    /// A script of the tenant that inbound calls run.
    #[serde(default)]
    pub script: Option<String>,
    /// The tenant (SUPERADMIN keys); a tenant key's own by default.
    #[serde(default)]
    pub tenant_id: Option<uuid::Uuid>,
}

/// `PATCH /v1/numbers/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNumber {
    /// The script inbound calls run; `null` clears it. Required.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = true)]
    pub script: Option<Option<String>>,
}

/// `Some(value)` for a field that is present (even as `null`), so absent and `null` differ.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// `POST /v1/scripts`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScript {
    /// Name (`[a-z0-9_-]{1,64}`).
    pub name: String,
    /// The Destiny-Script source.
    pub source: String,
    /// The tenant (SUPERADMIN keys); a tenant key's own by default.
    #[serde(default)]
    pub tenant_id: Option<uuid::Uuid>,
}

/// Paging of a list: `limit` (1–200, default 50) and the `cursor` of the previous page.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Most rows (1–200, default 50).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Only this tenant's rows (SUPERADMIN keys; a tenant key may name only its own).
    #[serde(default)]
    pub tenant_id: Option<uuid::Uuid>,
}

impl PageQuery {
    /// The page size, or a 400 `invalid_limit`.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be 1 to {MAX_PAGE}, not {n}"),
            )),
        }
    }

    /// The cursor as an id (the lists ordered by id), or a 400 `invalid_cursor`.
    pub fn id_cursor(&self) -> Result<Option<uuid::Uuid>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| uuid::Uuid::parse_str(c).map_err(|_| invalid_cursor(c)))
            .transpose()
    }

    /// The rows a list shows: a tenant key's own tenant; for SUPERADMIN, the named tenant or all.
    pub fn scope(&self, principal: &Principal) -> Result<Scope, ApiError> {
        match (principal.tenant, self.tenant_id) {
            (None, None) => Ok(Scope::Super),
            (_, requested) => Ok(Scope::Tenant(
                principal.acting_tenant(requested.map(TenantId))?,
            )),
        }
    }
}

/// A 400 for a cursor no page gave.
pub fn invalid_cursor(cursor: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_cursor",
        format!("cursor {cursor:?} is not one a previous page gave"),
    )
}

/// The cursor of the page after `rows`: the last row's key when the page is full.
pub fn next_cursor<T>(rows: &[T], limit: u32, key: impl Fn(&T) -> String) -> Option<String> {
    if rows.len() >= limit as usize {
        rows.last().map(key)
    } else {
        None
    }
}

/// The tenant of a script request (`?tenant_id=` for SUPERADMIN keys).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// The tenant (required for SUPERADMIN keys; a tenant key may name only its own).
    #[serde(default)]
    pub tenant_id: Option<uuid::Uuid>,
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_number`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// A script's errors and warnings (`invalid_script` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Vec<ScriptDiagnostic>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
    }

    #[test]
    fn pages_are_bounded() {
        let page = |limit| PageQuery {
            limit,
            ..PageQuery::default()
        };
        assert_eq!(page(None).limit().unwrap(), DEFAULT_PAGE);
        assert_eq!(page(Some(200)).limit().unwrap(), 200);
        assert_eq!(page(Some(0)).limit().unwrap_err().code, "invalid_limit");
        assert_eq!(page(Some(201)).limit().unwrap_err().code, "invalid_limit");
        assert_eq!(next_cursor(&[1, 2], 2, |n| n.to_string()), Some("2".into()));
        assert_eq!(next_cursor(&[1], 2, |n| n.to_string()), None);
    }

    #[test]
    fn patch_tells_null_from_absent() {
        let absent: UpdateNumber = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.script, None);
        let null: UpdateNumber = serde_json::from_str(r#"{"script":null}"#).unwrap();
        assert_eq!(null.script, Some(None));
        let set: UpdateNumber = serde_json::from_str(r#"{"script":"main"}"#).unwrap();
        assert_eq!(set.script, Some(Some("main".into())));
    }
}
