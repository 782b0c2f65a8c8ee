//! Tenants, their users and their API keys (stored as a hash only).

use sqlx::{AssertSqlSafe, Row};

use super::catalog::{MAX_PAGE, Rejected};
use super::keys::{KEY_PREFIX, display_prefix, generate_secret, hash_secret};
use super::{Scope, Store, StoreError, TenantId, now_us, parse_uuid};

/// The longest tenant or key name, in characters.
pub const MAX_NAME: usize = 200;

/// Checks a tenant's or key's display name: 1 to [`MAX_NAME`] characters, not only spaces,
/// no control characters. `field` names it in the message.
pub fn display_name(field: &str, name: &str) -> Result<(), Rejected> {
    let rule = if name.trim().is_empty() {
        Some("must not be empty")
    } else if name.chars().count() > MAX_NAME {
        Some("is longer than 200 characters")
    } else if name.chars().any(char::is_control) {
        Some("must not hold control characters")
    } else {
        None
    };
    match rule {
        None => Ok(()),
        Some(rule) => Err(Rejected {
            code: "invalid_name",
            message: format!("{field} {rule}"),
        }),
    }
}

/// What a tenant may do with calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Plan {
    /// Outbound calls only.
    Outbound,
    /// Inbound calls only.
    Inbound,
    /// Both.
    Full,
}

impl Plan {
    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Outbound => "OUTBOUND",
            Plan::Inbound => "INBOUND",
            Plan::Full => "FULL",
        }
    }

    /// Parses a stored label.
    pub fn parse(s: &str) -> Option<Plan> {
        [Plan::Outbound, Plan::Inbound, Plan::Full]
            .into_iter()
            .find(|p| p.as_str() == s)
    }

    /// Parses a label given by a person (`OUTBOUND`, `INBOUND`, `FULL`; any case).
    pub fn from_label(s: &str) -> Result<Plan, Rejected> {
        Plan::parse(&s.to_ascii_uppercase()).ok_or_else(|| Rejected {
            code: "invalid_plan",
            message: format!("unknown plan {s:?}: expected OUTBOUND, INBOUND or FULL"),
        })
    }
}

/// What a user or key may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    /// Places and reads calls of its tenant.
    Agent,
    /// Manages its tenant.
    Admin,
    /// Crosses tenants; belongs to none.
    Superadmin,
}

impl Role {
    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "AGENT",
            Role::Admin => "ADMIN",
            Role::Superadmin => "SUPERADMIN",
        }
    }

    /// Parses a stored label.
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Agent, Role::Admin, Role::Superadmin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// Parses a label given by a person (`AGENT`, `ADMIN`, `SUPERADMIN`; any case).
    pub fn from_label(s: &str) -> Result<Role, Rejected> {
        Role::parse(&s.to_ascii_uppercase()).ok_or_else(|| Rejected {
            code: "invalid_role",
            message: format!("unknown role {s:?}: expected AGENT, ADMIN or SUPERADMIN"),
        })
    }

    /// The scope a holder of this role in `tenant` gets.
    pub fn scope(self, tenant: Option<TenantId>) -> Option<Scope> {
        match (self, tenant) {
            (Role::Superadmin, None) => Some(Scope::Super),
            (Role::Agent | Role::Admin, Some(t)) => Some(Scope::Tenant(t)),
            _ => None,
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Id.
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// Plan.
    pub plan: Plan,
    /// Creation time (µs).
    pub created_us: i64,
}

/// A stored API key (without its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Id.
    pub id: uuid::Uuid,
    /// Its tenant (none for SUPERADMIN).
    pub tenant_id: Option<TenantId>,
    /// Role.
    pub role: Role,
    /// Label given at creation.
    pub name: String,
    /// The secret's first characters, for display.
    pub prefix: String,
    /// Creation time (µs).
    pub created_us: i64,
    /// When it was revoked (µs), if it was.
    pub revoked_us: Option<i64>,
}

impl ApiKey {
    /// The scope requests made with this key get.
    pub fn scope(&self) -> Option<Scope> {
        self.role.scope(self.tenant_id)
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: uuid::Uuid,
    /// Tenant (none for SUPERADMIN).
    pub tenant_id: Option<TenantId>,
    /// Email (unique).
    pub email: String,
    /// Role.
    pub role: Role,
}

fn tenant_of(column: &'static str, v: Option<String>) -> Result<Option<TenantId>, StoreError> {
    v.map(|s| parse_uuid(column, &s).map(TenantId)).transpose()
}

fn role_of(s: String) -> Result<Role, StoreError> {
    Role::parse(&s).ok_or(StoreError::Corrupt {
        column: "role",
        value: s,
    })
}

fn check_role(role: Role, tenant: Option<TenantId>) -> Result<(), StoreError> {
    role.scope(tenant).map(|_| ()).ok_or_else(|| {
        StoreError::Invalid(format!(
            "role {} {} a tenant",
            role.as_str(),
            if tenant.is_some() {
                "cannot belong to"
            } else {
                "needs"
            }
        ))
    })
}

const KEY_COLUMNS: &str = "id, tenant_id, role, name, prefix, created_us, revoked_us";

fn key_row(row: &sqlx::any::AnyRow) -> Result<ApiKey, StoreError> {
    let get = |e| StoreError::db("reading an API key")(e);
    Ok(ApiKey {
        id: parse_uuid("api_keys.id", &row.try_get::<String, _>(0).map_err(get)?)?,
        tenant_id: tenant_of("api_keys.tenant_id", row.try_get(1).map_err(get)?)?,
        role: role_of(row.try_get(2).map_err(get)?)?,
        name: row.try_get(3).map_err(get)?,
        prefix: row.try_get(4).map_err(get)?,
        created_us: row.try_get(5).map_err(get)?,
        revoked_us: row.try_get(6).map_err(get)?,
    })
}

fn tenant_row(row: &sqlx::any::AnyRow) -> Result<Tenant, StoreError> {
    let get = |e| StoreError::db("reading a tenant")(e);
    let plan: String = row.try_get(2).map_err(get)?;
    Ok(Tenant {
        id: TenantId(parse_uuid(
            "tenants.id",
            &row.try_get::<String, _>(0).map_err(get)?,
        )?),
        name: row.try_get(1).map_err(get)?,
        plan: Plan::parse(&plan).ok_or(StoreError::Corrupt {
            column: "tenants.plan",
            value: plan,
        })?,
        created_us: row.try_get(3).map_err(get)?,
    })
}

impl Store {
    /// Creates a tenant.
    pub async fn create_tenant(&self, name: &str, plan: Plan) -> Result<Tenant, StoreError> {
        display_name("name", name)?;
        let tenant = Tenant {
            id: TenantId(uuid::Uuid::now_v7()),
            name: name.to_string(),
            plan,
            created_us: now_us(),
        };
        sqlx::query("INSERT INTO tenants (id, name, plan, created_us) VALUES ($1, $2, $3, $4)")
            .bind(tenant.id.to_string())
            .bind(&tenant.name)
            .bind(plan.as_str())
            .bind(tenant.created_us)
            .execute(self.pool())
            .await
            .map_err(StoreError::db("creating a tenant"))?;
        Ok(tenant)
    }

    /// The tenants `scope` sees (its own, or all for super).
    pub async fn list_tenants(&self, scope: Scope) -> Result<Vec<Tenant>, StoreError> {
        let sql = format!(
            "SELECT id, name, plan, created_us FROM tenants WHERE 1 = 1{} ORDER BY created_us, id",
            scope.filter("id", 1)
        );
        let rows = scope
            .bind(sqlx::query(AssertSqlSafe(sql)))
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing tenants"))?;
        rows.iter().map(tenant_row).collect()
    }

    /// Tenant `id`, if `scope` sees it.
    pub async fn get_tenant(
        &self,
        scope: Scope,
        id: TenantId,
    ) -> Result<Option<Tenant>, StoreError> {
        let sql = format!(
            "SELECT id, name, plan, created_us FROM tenants WHERE id = $1{}",
            scope.filter("id", 2)
        );
        let row = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(id.to_string()))
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("reading a tenant"))?;
        row.as_ref().map(tenant_row).transpose()
    }

    /// Whether tenant `id` exists.
    pub async fn tenant_exists(&self, id: TenantId) -> Result<bool, StoreError> {
        Ok(self.get_tenant(Scope::Super, id).await?.is_some())
    }

    /// Renames tenant `id` and/or changes its plan (`None` keeps a field); returns it.
    pub async fn update_tenant(
        &self,
        scope: Scope,
        id: TenantId,
        name: Option<&str>,
        plan: Option<Plan>,
    ) -> Result<Tenant, StoreError> {
        if let Some(name) = name {
            display_name("name", name)?;
        }
        let mut tenant = self
            .get_tenant(scope, id)
            .await?
            .ok_or(StoreError::NotFound("tenant"))?;
        if let Some(name) = name {
            tenant.name = name.to_string();
        }
        if let Some(plan) = plan {
            tenant.plan = plan;
        }
        sqlx::query("UPDATE tenants SET name = $1, plan = $2 WHERE id = $3")
            .bind(tenant.name.clone())
            .bind(tenant.plan.as_str())
            .bind(id.to_string())
            .execute(self.pool())
            .await
            .map_err(StoreError::db("updating a tenant"))?;
        Ok(tenant)
    }

    /// Creates a user; SUPERADMIN users have no tenant, the others one.
    pub async fn create_user(
        &self,
        tenant: Option<TenantId>,
        email: &str,
        role: Role,
    ) -> Result<User, StoreError> {
        check_role(role, tenant)?;
        if !email.contains('@') {
            return Err(StoreError::Invalid(format!(
                "not an email address: {email:?}"
            )));
        }
        let user = User {
            id: uuid::Uuid::now_v7(),
            tenant_id: tenant,
            email: email.to_string(),
            role,
        };
        sqlx::query(
            "INSERT INTO users (id, tenant_id, email, role, created_us) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.id.to_string())
        .bind(tenant.map(|t| t.to_string()))
        .bind(email)
        .bind(role.as_str())
        .bind(now_us())
        .execute(self.pool())
        .await
        .map_err(StoreError::db("user"))?;
        Ok(user)
    }

    /// Creates an API key and returns it with its secret, which is not stored and cannot be
    /// shown again.
    pub async fn create_api_key(
        &self,
        tenant: Option<TenantId>,
        role: Role,
        name: &str,
    ) -> Result<(ApiKey, String), StoreError> {
        let secret = generate_secret()
            .map_err(|e| StoreError::Invalid(format!("no random source for a key: {e}")))?;
        let key = self.insert_api_key(tenant, role, name, &secret).await?;
        Ok((key, secret))
    }

    /// Stores a key whose secret the operator chose (e.g. `VOICEGW_ADMIN_KEY`); it must start
    /// with `vgw_` and hold at least 24 more characters.
    pub async fn create_api_key_with_secret(
        &self,
        tenant: Option<TenantId>,
        role: Role,
        name: &str,
        secret: &str,
    ) -> Result<ApiKey, StoreError> {
        let body = secret.strip_prefix(KEY_PREFIX).unwrap_or("");
        if body.len() < 24
            || !body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(StoreError::Invalid(format!(
                "an API key must be `{KEY_PREFIX}` followed by at least 24 letters, digits, `_` or `-`"
            )));
        }
        self.insert_api_key(tenant, role, name, secret).await
    }

    async fn insert_api_key(
        &self,
        tenant: Option<TenantId>,
        role: Role,
        name: &str,
        secret: &str,
    ) -> Result<ApiKey, StoreError> {
        check_role(role, tenant)?;
        display_name("name", name)?;
        if let Some(tenant) = tenant
            && !self.tenant_exists(tenant).await?
        {
            return Err(StoreError::NotFound("tenant"));
        }
        let key = ApiKey {
            id: uuid::Uuid::now_v7(),
            tenant_id: tenant,
            role,
            name: name.to_string(),
            prefix: display_prefix(secret).to_string(),
            created_us: now_us(),
            revoked_us: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, role, name, prefix, key_hash, created_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(key.id.to_string())
        .bind(tenant.map(|t| t.to_string()))
        .bind(role.as_str())
        .bind(name)
        .bind(&key.prefix)
        .bind(hash_secret(secret))
        .bind(key.created_us)
        .execute(self.pool())
        .await
        .map_err(StoreError::db("API key"))?;
        Ok(key)
    }

    /// The live (not revoked) key whose secret is `secret`, if any.
    pub async fn find_api_key(&self, secret: &str) -> Result<Option<ApiKey>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_us IS NULL"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(hash_secret(secret))
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("looking up an API key"))?;
        row.as_ref().map(key_row).transpose()
    }

    /// The keys `scope` sees, newest last.
    pub async fn list_api_keys(&self, scope: Scope) -> Result<Vec<ApiKey>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE 1 = 1{} ORDER BY created_us, id",
            scope.filter("tenant_id", 1)
        );
        let rows = scope
            .bind(sqlx::query(AssertSqlSafe(sql)))
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing API keys"))?;
        rows.iter().map(key_row).collect()
    }

    /// Revokes a key in `scope`.
    pub async fn revoke_api_key(&self, scope: Scope, id: uuid::Uuid) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE api_keys SET revoked_us = $1 WHERE id = $2 AND revoked_us IS NULL{}",
            scope.filter("tenant_id", 3)
        );
        let done = scope
            .bind(
                sqlx::query(AssertSqlSafe(sql))
                    .bind(now_us())
                    .bind(id.to_string()),
            )
            .execute(self.pool())
            .await
            .map_err(StoreError::db("revoking an API key"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("API key"));
        }
        Ok(())
    }

    /// Key `id`, if `scope` sees it.
    pub async fn get_api_key(
        &self,
        scope: Scope,
        id: uuid::Uuid,
    ) -> Result<Option<ApiKey>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1{}",
            scope.filter("tenant_id", 2)
        );
        let row = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(id.to_string()))
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("reading an API key"))?;
        row.as_ref().map(key_row).transpose()
    }

    /// Up to `limit` keys (revoked ones too) `scope` sees, oldest first, after key `after`.
    pub async fn list_api_keys_page(
        &self,
        scope: Scope,
        after: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id > $1{} ORDER BY id LIMIT {}",
            scope.filter("tenant_id", 2),
            i64::from(limit.clamp(1, MAX_PAGE))
        );
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let rows = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(after))
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing API keys"))?;
        rows.iter().map(key_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        assert!(display_name("name", "Acme Ltd.").is_ok());
        assert_eq!(display_name("name", "  ").unwrap_err().code, "invalid_name");
        assert!(display_name("name", &"x".repeat(201)).is_err());
        assert!(display_name("name", "a\nb").is_err());
    }

    #[test]
    fn labels_parse_in_any_case() {
        assert_eq!(Plan::from_label("full").unwrap(), Plan::Full);
        assert_eq!(Plan::from_label("GOLD").unwrap_err().code, "invalid_plan");
        assert_eq!(Role::from_label("Admin").unwrap(), Role::Admin);
        assert_eq!(Role::from_label("root").unwrap_err().code, "invalid_role");
    }
}
