//! A tenant's phone numbers, scripts (versioned, hashed) and contacts, and the rules their
//! fields follow. The rules ([`e164`], [`Carrier::parse`], [`script_name`]) are the one place
//! both the REST API and the operator CLI check input; the store applies them again on write.

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row};

use super::{Scope, Store, StoreError, TenantId, now_us, parse_uuid};
use crate::llm::tools::normalize_e164;

/// The most rows one page of a list holds.
pub const MAX_PAGE: u32 = 200;

/// The longest script name.
pub const MAX_SCRIPT_NAME: usize = 64;

/// A value that breaks its field's rule: a stable code (e.g. `invalid_number`) and a message
/// that names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejected {
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What is wrong, naming the rule.
    pub message: String,
}

impl From<Rejected> for StoreError {
    fn from(rejected: Rejected) -> Self {
        StoreError::Invalid(rejected.message)
    }
}

/// A phone number in E.164 (`+` and 7–15 digits, no leading 0), from one written with spaces,
/// dashes, dots or parentheses.
pub fn e164(number: &str) -> Result<String, Rejected> {
    normalize_e164(number).map_err(|rule| Rejected {
        code: "invalid_number",
        message: format!("invalid E.164 number: {rule}"),
    })
}

/// Checks a script name: 1 to 64 of `a-z`, `0-9`, `_` and `-`.
pub fn script_name(name: &str) -> Result<(), Rejected> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SCRIPT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Rejected {
            code: "invalid_script_name",
            message: format!(
                "invalid script name {name:?}: use 1 to {MAX_SCRIPT_NAME} of a-z, 0-9, `_` and `-`"
            ),
        })
    }
}

/// The carrier a number is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Carrier {
    /// Twilio Media Streams.
    Twilio,
    /// Exotel Voicebot.
    Exotel,
}

impl Carrier {
    /// Every carrier.
    pub const ALL: [Carrier; 2] = [Carrier::Twilio, Carrier::Exotel];

    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            Carrier::Twilio => "twilio",
            Carrier::Exotel => "exotel",
        }
    }

    /// Parses a label (`twilio`, `exotel`).
    pub fn parse(label: &str) -> Result<Carrier, Rejected> {
        Carrier::ALL
            .into_iter()
            .find(|c| c.as_str() == label)
            .ok_or_else(|| Rejected {
                code: "invalid_carrier",
                message: format!("unknown carrier {label:?}: expected twilio or exotel"),
            })
    }
}

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
    /// The tenant script inbound calls to it run (latest version); `None`: the default agent.
    pub script: Option<String>,
    /// Creation time (µs).
    pub created_us: i64,
}

/// What a new number is made of (checked by [`Store::add_number`]).
#[derive(Debug, Clone, Copy)]
pub struct NewNumber<'a> {
    /// The number, in any form [`e164`] accepts.
    pub e164: &'a str,
    /// The carrier label.
    pub carrier: &'a str,
    /// The tenant script inbound calls run; it must exist in the tenant.
    pub script: Option<&'a str>,
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
    /// Hex SHA-256 identifying the content (of the canonical form, for checked scripts).
    pub hash: String,
    /// The Destiny-Script source.
    pub source: String,
    /// Creation time (µs).
    pub created_us: i64,
}

/// What [`Store::save_script`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedScript {
    /// The latest version after the call.
    pub script: ScriptVersion,
    /// Whether it is a new version (`false`: the latest already had this hash).
    pub created: bool,
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

const NUMBER_COLUMNS: &str = "id, tenant_id, e164, carrier, script, created_us";
const SCRIPT_COLUMNS: &str = "id, tenant_id, name, version, hash, source, created_us";

fn number_row(row: &sqlx::any::AnyRow) -> Result<PhoneNumber, StoreError> {
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
        script: row.try_get(4).map_err(get)?,
        created_us: row.try_get(5).map_err(get)?,
    })
}

fn script_row(row: &sqlx::any::AnyRow) -> Result<ScriptVersion, StoreError> {
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
        created_us: row.try_get(6).map_err(get)?,
    })
}

/// A page size within 1..=[`MAX_PAGE`], for binding.
fn page_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, MAX_PAGE))
}

impl Store {
    /// Adds a number to `tenant` with no script; a number belongs to one tenant only.
    pub async fn add_phone_number(
        &self,
        tenant: TenantId,
        number: &str,
        carrier: &str,
    ) -> Result<PhoneNumber, StoreError> {
        self.add_number(
            tenant,
            NewNumber {
                e164: number,
                carrier,
                script: None,
            },
        )
        .await
    }

    /// Adds a number to `tenant`. Fails with [`StoreError::Invalid`] on a bad number, carrier
    /// or script name, `NotFound("tenant")` or `NotFound("script")` when either does not
    /// exist, and `Conflict` when any tenant has the number already.
    pub async fn add_number(
        &self,
        tenant: TenantId,
        new: NewNumber<'_>,
    ) -> Result<PhoneNumber, StoreError> {
        let e164 = e164(new.e164)?;
        let carrier = Carrier::parse(new.carrier)?;
        if !self.tenant_exists(tenant).await? {
            return Err(StoreError::NotFound("tenant"));
        }
        if let Some(script) = new.script {
            self.require_script(tenant, script).await?;
        }
        let n = PhoneNumber {
            id: uuid::Uuid::now_v7(),
            tenant_id: tenant,
            e164,
            carrier: carrier.as_str().to_string(),
            script: new.script.map(str::to_string),
            created_us: now_us(),
        };
        sqlx::query(
            "INSERT INTO phone_numbers (id, tenant_id, e164, carrier, script, created_us) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(n.id.to_string())
        .bind(tenant.to_string())
        .bind(n.e164.clone())
        .bind(n.carrier.clone())
        .bind(n.script.clone())
        .bind(n.created_us)
        .execute(self.pool())
        .await
        .map_err(StoreError::db("phone number"))?;
        Ok(n)
    }

    /// Fails with `NotFound("script")` unless `tenant` has a script `name`.
    async fn require_script(&self, tenant: TenantId, name: &str) -> Result<(), StoreError> {
        script_name(name)?;
        match self.latest_script(Scope::Tenant(tenant), name).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound("script")),
        }
    }

    /// The number `number` in `scope`, with the script its inbound calls run. With
    /// [`Scope::Super`]: the tenant that owns it, for routing an inbound call.
    pub async fn find_phone_number(
        &self,
        scope: Scope,
        number: &str,
    ) -> Result<Option<PhoneNumber>, StoreError> {
        let sql = format!(
            "SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE e164 = $1{}",
            scope.filter("tenant_id", 2)
        );
        let row = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(e164(number)?))
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("looking up a phone number"))?;
        row.as_ref().map(number_row).transpose()
    }

    /// The number with id `id` in `scope`.
    pub async fn get_number(
        &self,
        scope: Scope,
        id: uuid::Uuid,
    ) -> Result<Option<PhoneNumber>, StoreError> {
        let sql = format!(
            "SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE id = $1{}",
            scope.filter("tenant_id", 2)
        );
        let row = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(id.to_string()))
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("reading a phone number"))?;
        row.as_ref().map(number_row).transpose()
    }

    /// Up to `limit` numbers in `scope` (oldest first), after the one with id `after`.
    pub async fn list_numbers(
        &self,
        scope: Scope,
        after: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<PhoneNumber>, StoreError> {
        let sql = format!(
            "SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE id > $1{} ORDER BY id LIMIT {}",
            scope.filter("tenant_id", 2),
            page_limit(limit)
        );
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let rows = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(after))
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing phone numbers"))?;
        rows.iter().map(number_row).collect()
    }

    /// Sets (or with `None` clears) the script of number `id` in `scope`; the script must
    /// exist in the number's tenant (`NotFound("script")`).
    pub async fn set_number_script(
        &self,
        scope: Scope,
        id: uuid::Uuid,
        script: Option<&str>,
    ) -> Result<PhoneNumber, StoreError> {
        let mut number = self
            .get_number(scope, id)
            .await?
            .ok_or(StoreError::NotFound("phone number"))?;
        if let Some(script) = script {
            self.require_script(number.tenant_id, script).await?;
        }
        sqlx::query("UPDATE phone_numbers SET script = $1 WHERE id = $2 AND tenant_id = $3")
            .bind(script.map(str::to_string))
            .bind(id.to_string())
            .bind(number.tenant_id.to_string())
            .execute(self.pool())
            .await
            .map_err(StoreError::db("updating a phone number"))?;
        number.script = script.map(str::to_string);
        Ok(number)
    }

    /// Deletes number `id` in `scope`.
    pub async fn delete_number(&self, scope: Scope, id: uuid::Uuid) -> Result<(), StoreError> {
        let sql = format!(
            "DELETE FROM phone_numbers WHERE id = $1{}",
            scope.filter("tenant_id", 2)
        );
        let done = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(id.to_string()))
            .execute(self.pool())
            .await
            .map_err(StoreError::db("deleting a phone number"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("phone number"));
        }
        Ok(())
    }

    /// Stores `source` as the next version of `tenant`'s script `name`, identified by the
    /// SHA-256 of the text as given.
    pub async fn add_script_version(
        &self,
        tenant: TenantId,
        name: &str,
        source: &str,
    ) -> Result<ScriptVersion, StoreError> {
        let hash = hex::encode(Sha256::digest(source.as_bytes()));
        let latest = self.latest_script(Scope::Tenant(tenant), name).await?;
        self.insert_script(
            tenant,
            name,
            source,
            &hash,
            latest.map_or(1, |s| s.version + 1),
        )
        .await
    }

    /// Stores `source` (whose content hash is `hash`) as `tenant`'s script `name`: a new
    /// version when the latest has another hash, else the latest unchanged.
    pub async fn save_script(
        &self,
        tenant: TenantId,
        name: &str,
        source: &str,
        hash: &str,
    ) -> Result<SavedScript, StoreError> {
        script_name(name)?;
        if !self.tenant_exists(tenant).await? {
            return Err(StoreError::NotFound("tenant"));
        }
        // Two writers may race for the same version number: the loser reads again.
        let mut attempts = 0;
        loop {
            let latest = self.latest_script(Scope::Tenant(tenant), name).await?;
            let version = match latest {
                Some(latest) if latest.hash == hash => {
                    return Ok(SavedScript {
                        script: latest,
                        created: false,
                    });
                }
                Some(latest) => latest.version + 1,
                None => 1,
            };
            match self
                .insert_script(tenant, name, source, hash, version)
                .await
            {
                Ok(script) => {
                    return Ok(SavedScript {
                        script,
                        created: true,
                    });
                }
                Err(StoreError::Conflict(_)) if attempts < 3 => attempts += 1,
                Err(error) => return Err(error),
            }
        }
    }

    async fn insert_script(
        &self,
        tenant: TenantId,
        name: &str,
        source: &str,
        hash: &str,
        version: i64,
    ) -> Result<ScriptVersion, StoreError> {
        let script = ScriptVersion {
            id: uuid::Uuid::now_v7(),
            tenant_id: tenant,
            name: name.to_string(),
            version,
            hash: hash.to_string(),
            source: source.to_string(),
            created_us: now_us(),
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
        .bind(script.created_us)
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
            "SELECT {SCRIPT_COLUMNS} FROM scripts WHERE name = $1{} ORDER BY version DESC LIMIT 1",
            scope.filter("tenant_id", 2)
        );
        let row = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(name.to_string()))
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("reading a script"))?;
        row.as_ref().map(script_row).transpose()
    }

    /// Version `version` of script `name` in `scope`.
    pub async fn script_version(
        &self,
        scope: Scope,
        name: &str,
        version: i64,
    ) -> Result<Option<ScriptVersion>, StoreError> {
        let sql = format!(
            "SELECT {SCRIPT_COLUMNS} FROM scripts WHERE name = $1 AND version = $2{}",
            scope.filter("tenant_id", 3)
        );
        let row = scope
            .bind(
                sqlx::query(AssertSqlSafe(sql))
                    .bind(name.to_string())
                    .bind(version),
            )
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("reading a script version"))?;
        row.as_ref().map(script_row).transpose()
    }

    /// The latest version of up to `limit` of `tenant`'s scripts, by name, after name `after`.
    pub async fn list_scripts(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ScriptVersion>, StoreError> {
        let sql = format!(
            "SELECT {SCRIPT_COLUMNS} FROM scripts s WHERE tenant_id = $1 AND name > $2 \
             AND version = (SELECT MAX(version) FROM scripts m \
                            WHERE m.tenant_id = s.tenant_id AND m.name = s.name) \
             ORDER BY name LIMIT {}",
            page_limit(limit)
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(after.unwrap_or("").to_string())
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing scripts"))?;
        rows.iter().map(script_row).collect()
    }

    /// Up to `limit` versions of script `name` in `scope`, oldest first, after `after`.
    pub async fn list_script_versions(
        &self,
        scope: Scope,
        name: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ScriptVersion>, StoreError> {
        let sql = format!(
            "SELECT {SCRIPT_COLUMNS} FROM scripts WHERE name = $1 AND version > $2{} \
             ORDER BY version LIMIT {}",
            scope.filter("tenant_id", 3),
            page_limit(limit)
        );
        let rows = scope
            .bind(
                sqlx::query(AssertSqlSafe(sql))
                    .bind(name.to_string())
                    .bind(after.unwrap_or(0)),
            )
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing script versions"))?;
        rows.iter().map(script_row).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalized_or_rejected_with_the_rule() {
        assert_eq!(e164("+1 (415) 555-0100").unwrap(), "+14155550100");
        let r = e164("555").unwrap_err();
        assert_eq!(r.code, "invalid_number");
        assert!(r.message.contains("country code"), "{}", r.message);
        assert!(e164("+0123456789").is_err());
        assert!(e164("+1234").unwrap_err().message.contains("7 to 15"));
    }

    #[test]
    fn script_names_follow_the_rule() {
        for ok in ["a", "main", "front-desk_2", &"x".repeat(64)] {
            assert!(script_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Main", "a b", "é", "../x", &"x".repeat(65)] {
            assert_eq!(script_name(bad).unwrap_err().code, "invalid_script_name");
        }
    }

    #[test]
    fn carriers_parse_their_labels_only() {
        assert_eq!(Carrier::parse("twilio").unwrap(), Carrier::Twilio);
        assert_eq!(Carrier::parse("exotel").unwrap(), Carrier::Exotel);
        assert_eq!(
            Carrier::parse("Twilio").unwrap_err().code,
            "invalid_carrier"
        );
    }
}
