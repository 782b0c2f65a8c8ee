//! The calls-per-second limiter shared by every gateway process through Redis.
//!
//! It keeps the same sliding log as [`SlidingWindow`](super::limiter::SlidingWindow), in a
//! sorted set keyed `voicegw:cps:{carrier}:{account}` whose scores are start instants in µs of
//! the Redis server's clock (`TIME`, so the processes' own clocks never matter). One Lua script
//! does the whole check atomically: drop the entries at least one second old, admit the start
//! (add a unique member) when fewer than N remain, else answer how long until the oldest
//! leaves. A refused caller sleeps that long and asks again, so no one-second window ever holds
//! more than N starts across every process sharing the key.
//!
//! Redis trouble never lets calls through unpaced: a failed check is logged, counted, and
//! retried after a growing pause; the call waits for Redis to come back.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::limiter::{CpsLimiter, CpsLimiters};
use crate::config::DialerSettings;
use crate::control::dial::CarrierName;

/// Admits a start or says how long to wait. `KEYS[1]`: the log; `ARGV[1]`: N; `ARGV[2]`: a
/// unique member; `ARGV[3]`: the key's TTL (ms). Returns `{1, now_us}` when admitted, else
/// `{0, wait_us}`.
const ADMIT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1000000)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, now}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + 1000000 - now
if wait < 1 then wait = 1 end
if wait > 1000000 then wait = 1000000 end
return {0, wait}
";

/// How long the log outlives its newest start (ms): entries older than the window are useless.
const KEY_TTL_MS: u64 = 2_000;
/// First pause after a Redis failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between retries while Redis is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest a connection attempt or a command may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a limiter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    /// A configured rate is zero.
    #[error("dialer.{key} must be at least 1 call per second")]
    ZeroRate {
        /// The setting.
        key: &'static str,
    },
    /// The Redis URL does not parse.
    #[error("dialer.redis_url is not a usable Redis URL: {0}")]
    BadUrl(String),
    /// Redis did not answer at start.
    #[error("cannot reach Redis for the shared CPS limiter at {url}: {message}")]
    Unreachable {
        /// The URL, without a password.
        url: String,
        /// What failed.
        message: String,
    },
}

/// The Redis key of a carrier account's start log.
pub fn limiter_key(carrier: CarrierName, account: Option<&str>) -> String {
    format!(
        "voicegw:cps:{}:{}",
        carrier.as_str(),
        account.filter(|a| !a.is_empty()).unwrap_or("default")
    )
}

/// A [`CpsLimiter`] over a start log in Redis, shared by every process using the same key.
pub struct RedisCpsLimiter {
    connection: ConnectionManager,
    script: redis::Script,
    key: String,
    per_second: NonZeroU32,
    /// Makes each member unique: this limiter's random id and a counter.
    member_prefix: String,
    next_member: AtomicU64,
    /// Serialises this process's waiters so they are served in arrival order.
    turn: tokio::sync::Mutex<()>,
    /// Failed checks of this limiter.
    errors: AtomicU64,
    /// The gateway's metric for them, when given.
    error_counter: Option<prometheus::IntCounter>,
}

impl std::fmt::Debug for RedisCpsLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCpsLimiter")
            .field("key", &self.key)
            .field("per_second", &self.per_second)
            .finish_non_exhaustive()
    }
}

impl RedisCpsLimiter {
    /// A limiter on `key` admitting `per_second` starts per one-second window, over an open
    /// connection.
    pub fn new(connection: ConnectionManager, key: String, per_second: NonZeroU32) -> Self {
        RedisCpsLimiter {
            connection,
            script: redis::Script::new(ADMIT_SCRIPT),
            key,
            per_second,
            member_prefix: uuid::Uuid::new_v4().simple().to_string(),
            next_member: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
            errors: AtomicU64::new(0),
            error_counter: None,
        }
    }

    /// Counts failed Redis checks on `counter` (e.g. a labelled child of the gateway's metrics).
    pub fn with_error_counter(mut self, counter: prometheus::IntCounter) -> Self {
        self.error_counter = Some(counter);
        self
    }

    /// Failed Redis checks so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The Redis key of the start log.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Waits until a start is admitted; returns its instant on the Redis clock (µs since the
    /// Unix epoch).
    pub async fn acquire_at(&self) -> i64 {
        let _turn = self.turn.lock().await;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.try_admit().await {
                Ok(Admission::Admitted(at)) => return at,
                Ok(Admission::Wait(wait)) => {
                    backoff = FIRST_BACKOFF;
                    tokio::time::sleep(wait).await;
                }
                Err(error) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(counter) = &self.error_counter {
                        counter.inc();
                    }
                    tracing::warn!(
                        key = %self.key,
                        error = %error,
                        retry_ms = backoff.as_millis() as u64,
                        "shared CPS limiter: Redis check failed; holding the call"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One run of the script.
    async fn try_admit(&self) -> Result<Admission, redis::RedisError> {
        let member = format!(
            "{}-{}",
            self.member_prefix,
            self.next_member.fetch_add(1, Ordering::Relaxed)
        );
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(&self.key);
        invocation
            .arg(self.per_second.get())
            .arg(member)
            .arg(KEY_TTL_MS);
        let invocation = invocation.invoke_async::<(i64, i64)>(&mut connection);
        let (admitted, value) = match tokio::time::timeout(REDIS_TIMEOUT, invocation).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "no answer from Redis in time",
                )));
            }
        };
        Ok(if admitted == 1 {
            Admission::Admitted(value)
        } else {
            Admission::Wait(Duration::from_micros(value.clamp(1, 1_000_000) as u64))
        })
    }
}

/// One answer of the script.
enum Admission {
    /// Started at this Redis instant (µs).
    Admitted(i64),
    /// Ask again after this long.
    Wait(Duration),
}

#[async_trait]
impl CpsLimiter for RedisCpsLimiter {
    async fn acquire(&self) {
        self.acquire_at().await;
    }
}

/// `url` without its password, for messages.
fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// Opens a reconnecting, multiplexed connection to `url`, failing if Redis does not answer.
pub async fn connect(url: &str) -> Result<ConnectionManager, LimiterError> {
    let client = redis::Client::open(url).map_err(|e| LimiterError::BadUrl(e.to_string()))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(2);
    let unreachable = |message: String| LimiterError::Unreachable {
        url: display_url(url),
        message,
    };
    let mut connection = tokio::time::timeout(
        REDIS_TIMEOUT * 3,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| unreachable("no answer in time".to_owned()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if pong != "PONG" {
        return Err(unreachable(format!("PING answered {pong:?}")));
    }
    Ok(connection)
}

fn rate(value: u32, key: &'static str) -> Result<NonZeroU32, LimiterError> {
    NonZeroU32::new(value).ok_or(LimiterError::ZeroRate { key })
}

impl CpsLimiters {
    /// The limiters `settings` asks for: shared through Redis when `redis_url` is set (keyed
    /// per carrier account; Redis must answer now), in-process otherwise.
    pub async fn from_config(
        settings: &DialerSettings,
        twilio_account: Option<&str>,
        exotel_account: Option<&str>,
    ) -> Result<CpsLimiters, LimiterError> {
        CpsLimiters::from_config_with_metrics(settings, twilio_account, exotel_account, None).await
    }

    /// [`CpsLimiters::from_config`], counting Redis failures in `metrics` (per carrier).
    pub async fn from_config_with_metrics(
        settings: &DialerSettings,
        twilio_account: Option<&str>,
        exotel_account: Option<&str>,
        metrics: Option<&crate::metrics::Metrics>,
    ) -> Result<CpsLimiters, LimiterError> {
        let twilio_cps = rate(settings.twilio_cps, "twilio_cps")?;
        let exotel_cps = rate(settings.exotel_cps, "exotel_cps")?;
        let Some(url) = settings.redis_url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(CpsLimiters::local(twilio_cps, exotel_cps));
        };
        let connection = connect(url).await?;
        let limiter = |carrier: CarrierName, account: Option<&str>, per_second| {
            let limiter = RedisCpsLimiter::new(
                connection.clone(),
                limiter_key(carrier, account),
                per_second,
            );
            match metrics {
                Some(m) => limiter
                    .with_error_counter(m.limiter_errors.with_label_values(&[carrier.as_str()])),
                None => limiter,
            }
        };
        tracing::info!(url = %display_url(url), "CPS limits shared through Redis");
        Ok(CpsLimiters::new(
            std::sync::Arc::new(limiter(CarrierName::Twilio, twilio_account, twilio_cps)),
            std::sync::Arc::new(limiter(CarrierName::Exotel, exotel_account, exotel_cps)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_carrier_account() {
        assert_eq!(
            limiter_key(CarrierName::Twilio, Some("AC123")),
            "voicegw:cps:twilio:AC123"
        );
        assert_eq!(
            limiter_key(CarrierName::Exotel, None),
            "voicegw:cps:exotel:default"
        );
        assert_eq!(
            limiter_key(CarrierName::Exotel, Some("")),
            "voicegw:cps:exotel:default"
        );
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            display_url("redis://user:secret@127.0.0.1:6379/0"),
            "redis://user:***@127.0.0.1:6379/0"
        );
        assert_eq!(display_url("redis://127.0.0.1/"), "redis://127.0.0.1/");
    }

    #[tokio::test]
    async fn zero_rates_and_bad_urls_are_refused() {
        let settings = DialerSettings {
            twilio_cps: 0,
            ..DialerSettings::default()
        };
        let error = CpsLimiters::from_config(&settings, None, None)
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "dialer.twilio_cps must be at least 1 call per second"
        );
        let settings = DialerSettings {
            redis_url: Some("not a url".into()),
            ..DialerSettings::default()
        };
        assert!(matches!(
            CpsLimiters::from_config(&settings, None, None).await,
            Err(LimiterError::BadUrl(_))
        ));
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_at_start() {
        // Port 9 (discard) is closed on the test machine.
        let settings = DialerSettings {
            redis_url: Some("redis://:pw@127.0.0.1:9/".into()),
            ..DialerSettings::default()
        };
        let error = CpsLimiters::from_config(&settings, None, None)
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, LimiterError::Unreachable { .. }), "{text}");
        assert!(!text.contains("pw"), "{text}");
    }

    #[tokio::test]
    async fn without_redis_the_limiters_are_local() {
        let limiters = CpsLimiters::from_config(&DialerSettings::default(), Some("AC1"), None)
            .await
            .unwrap();
        // A local limiter at 1 CPS admits its first start at once.
        limiters.for_carrier(CarrierName::Twilio).acquire().await;
    }
}
