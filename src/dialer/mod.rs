//! The outbound dialer's pure cores: when a contact may be called, when to try again, how fast
//! calls may start, and who answered.
//!
//! - [`window`]: a contact's calling hours in their own time zone, across daylight-saving
//!   changes and closed dates.
//! - [`retry`]: the per-outcome retry policy (backoff schedule, attempts, deterministic jitter).
//! - [`limiter`]: the calls-per-second limiter that never lets more than N calls start in any
//!   one-second window.
//! - [`redis_limiter`]: the same limiter shared by every process through Redis.
//! - [`amd`]: answering-machine detection on the call audio (greeting shape and the beep).
//!
//! And the worker around them, over the queue in [`crate::store::dial_jobs`]:
//! - [`worker`]: the pool that claims due jobs and dials them ([`worker::Dialer`]);
//! - [`outcome`]: an attempt's outcome from its call row, and the job's next step;
//! - [`reconcile`]: settling finished attempts, lease takeover, SMS fallback sends;
//! - [`lookup`]: asking the carrier about an attempt the gateway lost track of;
//! - [`sms`]: the SMS fallback sender and its template;
//! - [`metrics`]: the dialer's Prometheus families;
//! - [`run`]: starting it inside `serve` or as `voicegw worker`.

pub mod amd;
pub mod limiter;
pub mod lookup;
pub mod metrics;
pub mod outcome;
pub mod reconcile;
pub mod redis_limiter;
pub mod retry;
pub mod run;
pub mod sms;
pub mod window;
pub mod worker;
