//! The shared CPS limiter against the Redis at 127.0.0.1:6379: two limiter instances on two
//! connections share one start log, and together never start more than N calls in any
//! one-second window of the Redis clock. Set `VOICEGW_TEST_NO_REDIS` to skip where no Redis
//! runs.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use voicegw::config::DialerSettings;
use voicegw::control::dial::CarrierName;
use voicegw::dialer::limiter::CpsLimiters;
use voicegw::dialer::redis_limiter::{RedisCpsLimiter, connect, limiter_key};

const REDIS_URL: &str = "redis://127.0.0.1:6379/";

fn skip() -> bool {
    if std::env::var_os("VOICEGW_TEST_NO_REDIS").is_some() {
        eprintln!("skipped: VOICEGW_TEST_NO_REDIS is set (no Redis on this machine)");
        return true;
    }
    false
}

fn unique_key() -> String {
    format!("voicegw:cps:test:{}", uuid::Uuid::new_v4().simple())
}

async fn limiter(key: &str, per_second: u32) -> Arc<RedisCpsLimiter> {
    let connection = connect(REDIS_URL).await.expect("Redis at 127.0.0.1:6379");
    Arc::new(RedisCpsLimiter::new(
        connection,
        key.to_owned(),
        NonZeroU32::new(per_second).expect("non-zero"),
    ))
}

/// Starts `total` acquires at once, alternating between `limiters`; the admitted Redis
/// instants (µs), sorted, and how many each limiter admitted.
async fn run(limiters: &[Arc<RedisCpsLimiter>], total: usize) -> (Vec<i64>, Vec<usize>) {
    let tasks: Vec<_> = (0..total)
        .map(|i| {
            let which = i % limiters.len();
            let limiter = limiters[which].clone();
            tokio::spawn(async move { (which, limiter.acquire_at().await) })
        })
        .collect();
    let mut at = Vec::with_capacity(total);
    let mut per_limiter = vec![0; limiters.len()];
    for task in tasks {
        let (which, instant) = task.await.expect("acquire task");
        per_limiter[which] += 1;
        at.push(instant);
    }
    at.sort_unstable();
    (at, per_limiter)
}

/// The most starts inside any window `[t, t + 1 s)`.
fn busiest_second(sorted: &[i64]) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi] - sorted[lo] >= 1_000_000 {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_limit() {
    if skip() {
        return;
    }
    const N: u32 = 20;
    const TOTAL: usize = 200;
    let key = unique_key();
    let limiters = [limiter(&key, N).await, limiter(&key, N).await];
    let (at, per_limiter) = tokio::time::timeout(Duration::from_secs(60), run(&limiters, TOTAL))
        .await
        .expect("200 starts at 20 CPS finish well within a minute");
    assert_eq!(at.len(), TOTAL);
    assert_eq!(per_limiter, vec![TOTAL / 2, TOTAL / 2]);
    let busiest = busiest_second(&at);
    assert!(
        busiest <= N as usize,
        "{busiest} starts in one second (limit {N})"
    );
    // Saturated, the pair starts close to N per second. 200 starts at N per window fill 10
    // windows: the last starts at least 9 s after the first (the guarantee), so 200 over
    // (span + 1 s) is at most N, and not far below it (the throughput).
    let span_us = at[TOTAL - 1] - at[0];
    assert!(span_us >= 9_000_000, "200 starts within {span_us} µs");
    let rate = TOTAL as f64 / (span_us as f64 / 1e6 + 1.0);
    assert!(rate <= N as f64, "rate {rate:.2}/s over the limit");
    assert!(
        rate >= N as f64 * 0.6,
        "rate {rate:.2}/s far below the limit"
    );
    // Redis answered every check.
    assert_eq!(limiters[0].errors() + limiters[1].errors(), 0);
    eprintln!("200 starts, busiest second {busiest}, rate {rate:.2}/s");
}

#[tokio::test]
async fn an_idle_limiter_admits_a_burst_of_n_at_once() {
    if skip() {
        return;
    }
    let key = unique_key();
    let limiter = limiter(&key, 5).await;
    let (at, _) = tokio::time::timeout(
        Duration::from_secs(20),
        run(std::slice::from_ref(&limiter), 6),
    )
    .await
    .expect("six starts at 5 CPS");
    // Five within the first second; the sixth a full second after the first.
    assert!(at[4] - at[0] < 1_000_000);
    assert!(at[5] - at[0] >= 1_000_000, "{at:?}");
    assert_eq!(limiter.key(), key);
}

#[tokio::test]
async fn the_log_expires() {
    if skip() {
        return;
    }
    let key = unique_key();
    let limiter = limiter(&key, 3).await;
    limiter.acquire_at().await;
    let mut connection = connect(REDIS_URL).await.expect("Redis");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .expect("PTTL");
    assert!(ttl > 0 && ttl <= 2_000, "ttl {ttl}");
    let members: i64 = redis::cmd("ZCARD")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .expect("ZCARD");
    assert_eq!(members, 1);
}

#[tokio::test]
async fn a_failing_redis_holds_calls_instead_of_letting_them_through() {
    // Needs no Redis: the limiter points at a closed port.
    let client = redis::Client::open("redis://127.0.0.1:9/").expect("url");
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_number_of_retries(0);
    let connection = redis::aio::ConnectionManager::new_lazy_with_config(client, config)
        .expect("lazy connection");
    let limiter = RedisCpsLimiter::new(connection, unique_key(), NonZeroU32::MIN);
    let held = tokio::time::timeout(Duration::from_millis(500), limiter.acquire_at()).await;
    assert!(held.is_err(), "a start was admitted without Redis");
    assert!(limiter.errors() >= 1, "the failures were counted");
}

#[tokio::test]
async fn from_config_shares_one_key_per_carrier_account() {
    if skip() {
        return;
    }
    let account = format!("AC{}", uuid::Uuid::new_v4().simple());
    let settings = DialerSettings {
        twilio_cps: 2,
        exotel_cps: 1,
        redis_url: Some(REDIS_URL.to_owned()),
        ..DialerSettings::default()
    };
    let first = CpsLimiters::from_config(&settings, Some(&account), None)
        .await
        .expect("limiters");
    let second = CpsLimiters::from_config(&settings, Some(&account), None)
        .await
        .expect("limiters");
    // Two starts through two processes' limiters fill the account's log at 2 CPS.
    first.for_carrier(CarrierName::Twilio).acquire().await;
    second.for_carrier(CarrierName::Twilio).acquire().await;
    let mut connection = connect(REDIS_URL).await.expect("Redis");
    let key = limiter_key(CarrierName::Twilio, Some(&account));
    let members: i64 = redis::cmd("ZCARD")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .expect("ZCARD");
    assert_eq!(members, 2);
}
