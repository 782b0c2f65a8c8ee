//! The first SUPERADMIN key: from `VOICEGW_ADMIN_KEY`, or made and printed once when the
//! database has no key at all, so a fresh install can be administered at once.

use crate::store::tenants::Role;
use crate::store::{Scope, Store, StoreError};

/// The name given to bootstrap keys.
pub const BOOTSTRAP_KEY_NAME: &str = "bootstrap";

/// What [`ensure_admin_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// The configured key was already stored.
    ConfiguredKeyPresent,
    /// The configured key was stored now.
    ConfiguredKeyStored,
    /// The database has keys and none was configured: nothing to do.
    KeysExist,
    /// The database had no key: this SUPERADMIN secret was made (show it once; it is not stored).
    Generated(String),
}

/// Makes sure a SUPERADMIN key exists: `configured` (the `VOICEGW_ADMIN_KEY` secret) is stored
/// when it is not yet; without one, a key is generated when the database has none.
pub async fn ensure_admin_key(
    store: &Store,
    configured: Option<&str>,
) -> Result<Bootstrap, StoreError> {
    if let Some(secret) = configured {
        if let Some(key) = store.find_api_key(secret).await? {
            if key.role != Role::Superadmin {
                return Err(StoreError::Invalid(
                    "VOICEGW_ADMIN_KEY is the secret of a tenant key, not a SUPERADMIN key".into(),
                ));
            }
            return Ok(Bootstrap::ConfiguredKeyPresent);
        }
        store
            .create_api_key_with_secret(None, Role::Superadmin, BOOTSTRAP_KEY_NAME, secret)
            .await?;
        return Ok(Bootstrap::ConfiguredKeyStored);
    }
    if !store.list_api_keys(Scope::Super).await?.is_empty() {
        return Ok(Bootstrap::KeysExist);
    }
    let (_, secret) = store
        .create_api_key(None, Role::Superadmin, BOOTSTRAP_KEY_NAME)
        .await?;
    Ok(Bootstrap::Generated(secret))
}
