//! A tenant's phone numbers, scripts (versioned, hashed) and contacts.

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row};

use super::{Scope, Store, StoreError, TenantId, now_us, parse_uuid};
use crate::llm::tools::normalize_e164;

/// A number a tenant answers calls on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    /// Id.
    pub id: uuid::Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// The number (E.164).
    pub e164: String,
    /// Carrier (`twilio`, `exotel`).
    pub carrier: String,
}

/// One version of a tenant's script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptVersion {
    /// Id.
    pub id: uuid::Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Name.
    pub name: String,
    /// 1, 2, 3 … per name.
    pub version: i64,
    /// Hex SHA-256 of the source.
    pub hash: String,
    /// The Destiny-Script source.
    pub source: String,
}

/// A tenant's contact, with the variables its calls get.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    /// Id.
    pub id: uuid::Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Phone (E.164).
    pub phone: String,
    /// Variables (a JSON object).
    pub variables: serde_json::Map<String, serde_json::Value>,
}

fn e164(number: &str) -> Result<String, StoreError> {
    normalize_e164(number).map_err(|e| StoreError::Invalid(format!("{number:?}: {e}")))
}

impl Store {
    /// Adds a number to `tenant`; a number belongs to one tenant only.
    pub async fn add_phone_number(
        &self,
        tenant: TenantId,
        number: &str,
        carrier: &str,
    ) -> Result<PhoneNumber, StoreError> {
        if !matches!(carrier, "twilio" | "exotel") {
            return Err(StoreError::Invalid(format!("unknown carrier {carrier:?}")));
        }
        let n = PhoneNumber {
            id: uuid::Uuid::now_v7(),
            tenant_id: tenant,
            e164: e164(number)?,
            carrier: carrier.to_string(),
        };
        sqlx::query(
            "INSERT INTO phone_numbers (id, tenant_id, e164, carrier, created_us) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(n.id.to_string())
        .bind(tenant.to_string())
        .bind(n.e164.clone())
        .bind(n.carrier.clone())
        .bind(now_us())
        .execute(self.pool())
        .await
        .map_err(StoreError::db("phone number"))?;
        Ok(n)
    }

    /// The number `number` in `scope` (with [`Scope::Super`]: the tenant that owns it, for
    /// routing an inbound call).
    pub async fn find_phone_number(
        &self,
        scope: Scope,
        number: &str,
    ) -> Result<Option<PhoneNumber>, StoreError> {
        let sql = format!(
            "SELECT id, tenant_id, e164, carrier FROM phone_numbers WHERE e164 = $1{}",
            scope.filter("tenant_id", 2)
        );
        let row = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(e164(number)?))
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("looking up a phone number"))?;
        row.map(|row| {
            let get = |e| StoreError::db("reading a phone number")(e);
            Ok(PhoneNumber {
                id: parse_uuid(
                    "phone_numbers.id",
                    &row.try_get::<String, _>(0).map_err(get)?,
                )?,
                tenant_id: TenantId(parse_uuid(
                    "phone_numbers.tenant_id",
                    &row.try_get::<String, _>(1).map_err(get)?,
                )?),
                e164: row.try_get(2).map_err(get)?,
                carrier: row.try_get(3).map_err(get)?,
            })
        })
        .transpose()
    }

    /// Stores `source` as the next version of `tenant`'s script `name`.
    pub async fn add_script_version(
        &self,
        tenant: TenantId,
        name: &str,
        source: &str,
    ) -> Result<ScriptVersion, StoreError> {
        let latest = self.latest_script(Scope::Tenant(tenant), name).await?;
        let script = ScriptVersion {
            id: uuid::Uuid::now_v7(),
            tenant_id: tenant,
            name: name.to_string(),
            version: latest.map_or(1, |s| s.version + 1),
            hash: hex::encode(Sha256::digest(source.as_bytes())),
            source: source.to_string(),
        };
        sqlx::query(
            "INSERT INTO scripts (id, tenant_id, name, version, hash, source, created_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(script.id.to_string())
        .bind(tenant.to_string())
        .bind(script.name.clone())
        .bind(script.version)
        .bind(script.hash.clone())
        .bind(script.source.clone())
        .bind(now_us())
        .execute(self.pool())
        .await
        .map_err(StoreError::db("script version"))?;
        Ok(script)
    }

    /// The newest version of script `name` in `scope`.
    pub async fn latest_script(
        &self,
        scope: Scope,
        name: &str,
    ) -> Result<Option<ScriptVersion>, StoreError> {
        let sql = format!(
            "SELECT id, tenant_id, name, version, hash, source FROM scripts WHERE name = $1{} \
             ORDER BY version DESC LIMIT 1",
            scope.filter("tenant_id", 2)
        );
        let row = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(name.to_string()))
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("reading a script"))?;
        row.map(|row| {
            let get = |e| StoreError::db("reading a script")(e);
            Ok(ScriptVersion {
                id: parse_uuid("scripts.id", &row.try_get::<String, _>(0).map_err(get)?)?,
                tenant_id: TenantId(parse_uuid(
                    "scripts.tenant_id",
                    &row.try_get::<String, _>(1).map_err(get)?,
                )?),
                name: row.try_get(2).map_err(get)?,
                version: row.try_get(3).map_err(get)?,
                hash: row.try_get(4).map_err(get)?,
                source: row.try_get(5).map_err(get)?,
            })
        })
        .transpose()
    }

    /// Adds a contact to `tenant`.
    pub async fn add_contact(
        &self,
        tenant: TenantId,
        phone: &str,
        variables: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Contact, StoreError> {
        let contact = Contact {
            id: uuid::Uuid::now_v7(),
            tenant_id: tenant,
            phone: e164(phone)?,
            variables,
        };
        sqlx::query(
            "INSERT INTO contacts (id, tenant_id, phone, variables, created_us) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(contact.id.to_string())
        .bind(tenant.to_string())
        .bind(contact.phone.clone())
        .bind(serde_json::Value::Object(contact.variables.clone()).to_string())
        .bind(now_us())
        .execute(self.pool())
        .await
        .map_err(StoreError::db("contact"))?;
        Ok(contact)
    }

    /// The contact with `phone` in `scope`.
    pub async fn find_contact(
        &self,
        scope: Scope,
        phone: &str,
    ) -> Result<Option<Contact>, StoreError> {
        let sql = format!(
            "SELECT id, tenant_id, phone, variables FROM contacts WHERE phone = $1{}",
            scope.filter("tenant_id", 2)
        );
        let row = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(e164(phone)?))
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("reading a contact"))?;
        row.map(|row| {
            let get = |e| StoreError::db("reading a contact")(e);
            let vars: String = row.try_get(3).map_err(get)?;
            Ok(Contact {
                id: parse_uuid("contacts.id", &row.try_get::<String, _>(0).map_err(get)?)?,
                tenant_id: TenantId(parse_uuid(
                    "contacts.tenant_id",
                    &row.try_get::<String, _>(1).map_err(get)?,
                )?),
                phone: row.try_get(2).map_err(get)?,
                variables: match serde_json::from_str(&vars) {
                    Ok(serde_json::Value::Object(map)) => map,
                    _ => {
                        return Err(StoreError::Corrupt {
                            column: "contacts.variables",
                            value: vars,
                        });
                    }
                },
            })
        })
        .transpose()
    }
}
