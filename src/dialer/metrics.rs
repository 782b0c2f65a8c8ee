//! The dialer's Prometheus metrics: jobs claimed, calls placed, dial errors by kind, retries
//! scheduled, SMS fallbacks, and the time spent waiting on the calls-per-second limiter.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

/// Histogram buckets for limiter waits, 1 ms to 10 s.
const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// The dialer's metric families.
#[derive(Clone)]
pub struct DialerMetrics {
    /// Jobs claimed from the queue.
    pub jobs_claimed: IntCounter,
    /// Calls handed to a carrier that accepted them.
    pub calls_placed: IntCounter,
    /// Dial errors, by kind (`refused`, `outcome_unknown`, `unreachable`, `not_configured`,
    /// `store`, …).
    pub dial_errors: IntCounterVec,
    /// Retries scheduled after an attempt.
    pub retries: IntCounter,
    /// Jobs that reached `done`, by final reason.
    pub jobs_final: IntCounterVec,
    /// SMS fallbacks, by result (`sent`, `failed`, `unknown`).
    pub sms: IntCounterVec,
    /// Time waited on the calls-per-second limiter before a dial.
    pub limiter_wait_seconds: Histogram,
}

impl std::fmt::Debug for DialerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DialerMetrics")
    }
}

impl DialerMetrics {
    /// The families, registered in `registry`.
    pub fn register(registry: &Registry) -> Result<DialerMetrics, prometheus::Error> {
        let metrics = DialerMetrics::unregistered()?;
        registry.register(Box::new(metrics.jobs_claimed.clone()))?;
        registry.register(Box::new(metrics.calls_placed.clone()))?;
        registry.register(Box::new(metrics.dial_errors.clone()))?;
        registry.register(Box::new(metrics.retries.clone()))?;
        registry.register(Box::new(metrics.jobs_final.clone()))?;
        registry.register(Box::new(metrics.sms.clone()))?;
        registry.register(Box::new(metrics.limiter_wait_seconds.clone()))?;
        Ok(metrics)
    }

    /// The families, in no registry (tests, tools).
    pub fn unregistered() -> Result<DialerMetrics, prometheus::Error> {
        Ok(DialerMetrics {
            jobs_claimed: IntCounter::new(
                "voicegw_dialer_jobs_claimed_total",
                "Dial jobs claimed from the queue",
            )?,
            calls_placed: IntCounter::new(
                "voicegw_dialer_calls_placed_total",
                "Campaign calls accepted by a carrier",
            )?,
            dial_errors: IntCounterVec::new(
                Opts::new("voicegw_dialer_dial_errors_total", "Dial errors, by kind"),
                &["kind"],
            )?,
            retries: IntCounter::new(
                "voicegw_dialer_retries_total",
                "Retries scheduled after an attempt",
            )?,
            jobs_final: IntCounterVec::new(
                Opts::new(
                    "voicegw_dialer_jobs_final_total",
                    "Dial jobs that reached done, by final reason",
                ),
                &["reason"],
            )?,
            sms: IntCounterVec::new(
                Opts::new("voicegw_dialer_sms_total", "SMS fallbacks, by result"),
                &["result"],
            )?,
            limiter_wait_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "voicegw_dialer_limiter_wait_seconds",
                    "Time waited on the calls-per-second limiter before a dial",
                )
                .buckets(WAIT_BUCKETS.to_vec()),
            )?,
        })
    }
}
