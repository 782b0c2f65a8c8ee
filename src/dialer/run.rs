//! Starting the dialer from the gateway's config: inside `serve` (when `[dialer] enabled`)
//! and as `voicegw worker` (the dialer alone, until Ctrl-C or SIGTERM).

use std::sync::Arc;

use super::limiter::CpsLimiters;
use super::metrics::DialerMetrics;
use super::redis_limiter::LimiterError;
use super::sms::{SmsSender, TwilioSms};
use super::worker::{Dialer, DialerDeps, DialerOptions};
use crate::call::registry::Registry;
use crate::carrier::twilio_api::TwilioRest;
use crate::config::{Config, ConfigError};
use crate::control::call_plane::CallPlane;
use crate::metrics::Metrics;
use crate::store::hub::EventHub;
use crate::store::{OpenOptions, Store, StoreError};

/// Why the dialer could not start.
#[derive(Debug, thiserror::Error)]
pub enum DialerStartError {
    /// No public URL: carriers could not reach the calls.
    #[error(
        "the dialer needs VOICEGW_PUBLIC_URL: carriers must reach this gateway to connect a call"
    )]
    NoPublicUrl,
    /// The calls-per-second limiter could not be set up (e.g. Redis unreachable).
    #[error("the dialer's CPS limiter: {0}")]
    Limiter(#[from] LimiterError),
    /// The dialer's metrics could not be registered.
    #[error("dialer metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A config value is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The conversation pipeline (agents, tenants' scripts) cannot start.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
}

/// Starts the dialer pool of this process over `store`, `plane` and `registry`.
pub async fn start_dialer(
    config: &Config,
    store: Store,
    plane: Arc<CallPlane>,
    registry: Arc<Registry>,
    metrics: &Metrics,
) -> Result<Dialer, DialerStartError> {
    let public_url = config
        .auth
        .public_url
        .clone()
        .filter(|u| !u.is_empty())
        .ok_or(DialerStartError::NoPublicUrl)?;
    let limiters = CpsLimiters::from_config_with_metrics(
        &config.dialer,
        config.twilio.account_sid.as_deref(),
        config.exotel.account_sid.as_deref(),
        Some(metrics),
    )
    .await?;
    let sms: Option<Arc<dyn SmsSender>> = match config.twilio_rest() {
        Some(rest) => {
            let account = rest.account_sid.clone();
            let client = TwilioRest::new(rest).map_err(|e| ConfigError::Invalid {
                key: "twilio",
                message: e.to_string(),
            })?;
            Some(Arc::new(TwilioSms::new(client, account)))
        }
        None => {
            tracing::info!("dialer: no Twilio account, SMS fallbacks wait for a process with one");
            None
        }
    };
    let deps = DialerDeps {
        store,
        plane,
        registry,
        public_url,
        limiters,
        sms,
        metrics: DialerMetrics::register(metrics.registry())?,
    };
    Ok(Dialer::spawn(
        deps,
        DialerOptions::from_settings(&config.dialer),
    ))
}

/// `voicegw worker`: the dialer alone on the configured store, carriers and providers, until
/// Ctrl-C or SIGTERM; then a graceful stop.
pub async fn run_worker(config: Config) -> Result<(), DialerStartError> {
    let metrics = Metrics::new()?;
    let store = Store::open_with(
        &config.store.url,
        &OpenOptions {
            max_connections: config.store.max_connections,
            ..OpenOptions::default()
        },
    )
    .await?;
    let pipeline = Arc::new(crate::pipeline::Pipeline::build(&config, &metrics)?);
    let plane = Arc::new(
        CallPlane::new(
            pipeline,
            crate::control::dial::carriers_from_config(&config)?,
            config.auth.exotel_credentials.clone(),
            EventHub::default(),
        )
        .with_metrics(metrics.clone()),
    );
    let registry = Arc::new(Registry::new());
    let dialer = start_dialer(&config, store.clone(), plane, registry, &metrics).await?;
    tracing::info!(store = ?store.backend(), "voicegw worker running");
    crate::server::shutdown_signal().await;
    tracing::info!("voicegw worker stopping");
    dialer.stop().await;
    store.close().await;
    Ok(())
}
