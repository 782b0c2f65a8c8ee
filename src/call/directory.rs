//! Where a session looks up a call the control plane created on another gateway instance.
//!
//! The control plane registers each call it creates in its own instance's [`Registry`]; a
//! carrier may connect the call's stream to any instance, so a stream whose `call_id` is not
//! expected in memory is looked up here (the control plane supplies the implementation, e.g.
//! one reading the store). The session bounds the wait with [`RESOLVE_TIMEOUT`].
//!
//! [`Registry`]: super::registry::Registry

use std::time::Duration;

use async_trait::async_trait;

use super::registry::ExpectedCall;

/// Longest a session waits for [`CallDirectory::resolve`] before serving the call with the
/// default agent.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Finds calls created elsewhere.
#[async_trait]
pub trait CallDirectory: Send + Sync {
    /// The call a stream's `call_id` custom parameter names, if it is known and may still be
    /// connected (each call should resolve for one stream only).
    async fn resolve(&self, call_id: &str) -> Option<ExpectedCall>;
}
