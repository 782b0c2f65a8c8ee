//! Bearer API keys: who is calling, and what they may see.
//!
//! Every `/v1` route takes a [`Principal`]: the key from `Authorization: Bearer vgw_…`, looked
//! up by its SHA-256 (secrets are never stored). Its role decides what it may do
//! ([`Principal::require`]) and its tenant what it may see ([`Principal::scope`]): a tenant's
//! keys see their tenant only; a SUPERADMIN key (no tenant) sees every tenant. A row outside
//! the caller's scope is answered 404, never 403, so ids of other tenants are not confirmed.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::ControlState;
use super::error::ApiError;
use crate::store::tenants::Role;
use crate::store::{Scope, TenantId};

/// The holder of a valid API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The key's id.
    pub key_id: uuid::Uuid,
    /// The key's tenant (`None` for SUPERADMIN).
    pub tenant: Option<TenantId>,
    /// The key's role.
    pub role: Role,
}

impl Principal {
    /// The rows this key may read.
    pub fn scope(&self) -> Scope {
        match self.tenant {
            Some(tenant) => Scope::Tenant(tenant),
            None => Scope::Super,
        }
    }

    /// Refuses (403) a key whose role is below `needed` (AGENT < ADMIN < SUPERADMIN).
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs a {} key; this key is {}",
                needed.as_str(),
                self.role.as_str()
            )))
        }
    }

    /// The tenant a request acts for: a tenant key acts for its own tenant (naming another
    /// is answered 404, as if it did not exist); a SUPERADMIN key must name one.
    pub fn acting_tenant(&self, requested: Option<TenantId>) -> Result<TenantId, ApiError> {
        match (self.tenant, requested) {
            (Some(own), None) => Ok(own),
            (Some(own), Some(other)) if own == other => Ok(own),
            (Some(_), Some(_)) => Err(ApiError::not_found("tenant")),
            (None, Some(requested)) => Ok(requested),
            (None, None) => Err(ApiError::bad_request(
                "tenant_required",
                "a SUPERADMIN key must name the tenant (`tenant_id`)",
            )),
        }
    }
}

/// A 401 that tells the client how to authenticate.
struct Unauthorized(ApiError);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"voicegw\""),
        );
        response
    }
}

/// The bearer token of a request, or why there is none.
pub fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <API key>`"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("expected `Authorization: Bearer <API key>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthorized(format!(
            "unsupported authorization scheme {scheme:?}; use Bearer"
        )));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::unauthorized("empty bearer token"));
    }
    Ok(token)
}

impl FromRequestParts<ControlState> for Principal {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ControlState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).map_err(|e| Unauthorized(e).into_response())?;
        let key = state
            .store
            .find_api_key(token)
            .await
            .map_err(|e| ApiError::from(e).into_response())?
            .ok_or_else(|| {
                Unauthorized(ApiError::unauthorized("unknown or revoked API key")).into_response()
            })?;
        Ok(Principal {
            key_id: key.id,
            tenant: key.tenant_id,
            role: key.role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn principal(role: Role, tenant: Option<TenantId>) -> Principal {
        Principal {
            key_id: uuid::Uuid::nil(),
            tenant,
            role,
        }
    }

    fn parts(authorization: Option<&str>) -> Parts {
        let mut builder = Request::builder().uri("/v1/calls");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn roles_are_ordered() {
        let t = Some(TenantId(uuid::Uuid::now_v7()));
        assert!(principal(Role::Agent, t).require(Role::Agent).is_ok());
        assert_eq!(
            principal(Role::Agent, t)
                .require(Role::Admin)
                .unwrap_err()
                .status,
            axum::http::StatusCode::FORBIDDEN
        );
        assert!(principal(Role::Admin, t).require(Role::Agent).is_ok());
        assert!(
            principal(Role::Superadmin, None)
                .require(Role::Admin)
                .is_ok()
        );
        assert!(principal(Role::Admin, t).require(Role::Superadmin).is_err());
    }

    #[test]
    fn tenant_keys_act_for_their_tenant_only() {
        let own = TenantId(uuid::Uuid::now_v7());
        let other = TenantId(uuid::Uuid::now_v7());
        let key = principal(Role::Admin, Some(own));
        assert_eq!(key.scope(), Scope::Tenant(own));
        assert_eq!(key.acting_tenant(None).unwrap(), own);
        assert_eq!(key.acting_tenant(Some(own)).unwrap(), own);
        assert_eq!(
            key.acting_tenant(Some(other)).unwrap_err().status.as_u16(),
            404
        );
        let root = principal(Role::Superadmin, None);
        assert_eq!(root.scope(), Scope::Super);
        assert_eq!(root.acting_tenant(Some(other)).unwrap(), other);
        assert_eq!(
            root.acting_tenant(None).unwrap_err().code,
            "tenant_required"
        );
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert_eq!(
            bearer_token(&parts(Some("Bearer vgw_abc"))).unwrap(),
            "vgw_abc"
        );
        assert_eq!(
            bearer_token(&parts(Some("bearer  vgw_abc "))).unwrap(),
            "vgw_abc"
        );
        assert!(bearer_token(&parts(None)).is_err());
        assert!(bearer_token(&parts(Some("Basic dXNlcjpwYXNz"))).is_err());
        assert!(bearer_token(&parts(Some("Bearer "))).is_err());
        assert!(bearer_token(&parts(Some("vgw_abc"))).is_err());
    }
}
