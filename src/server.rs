//! The front door: axum routes for the carriers' media-stream WebSockets, health and metrics,
//! and the serve loop with graceful shutdown.
//!
//! Routes: `GET /stream/twilio` and `GET /stream/exotel` (WebSocket upgrade; each connection is
//! one call; authenticated by `X-Twilio-Signature` / Basic credentials where configured,
//! refused with 503 past `limits.max_streams`), `GET /healthz` (JSON; 503 while draining), `GET /metrics` (Prometheus text).
//! Errors are JSON `{"error": {"code", "message"}}`.
//!
//! Shutdown (SIGTERM or Ctrl-C): stop accepting connections, report `draining` on `/healthz`,
//! let live calls finish for up to the grace period, then close the rest with 1001; then the
//! CallEvent writer gets up to 10 s to store (or spool) the last events.
//!
//! A PostgreSQL database unreachable at start does not stop the gateway: calls are served and
//! their events spooled, `/healthz` reports `"store": "unavailable"` and the control plane's
//! routes answer 503 until a background task has reached and migrated it
//! (see [`open_store_or_defer`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::call::agent::AgentError;
use crate::call::directory::CallDirectory;
use crate::call::events::EventSink;
use crate::call::registry::Registry;
use crate::call::session::{CallSettings, SessionDeps};
use crate::call::transport::serve_call;
use crate::carrier::{CarrierKind, signature};
use crate::config::{AuthSettings, Config, ConfigError};
use crate::control::bootstrap::{Bootstrap, ensure_admin_key};
use crate::control::{ControlDeps, ControlState};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineError};
use crate::store::events::{WriterConfig, WriterStats, spawn_event_writer};
use crate::store::hub::EventHub;
use crate::store::readiness::{StoreReadiness, is_unreachable, migrate_when_reachable};
use crate::store::{OpenOptions, Store};
use axum::serve::ListenerExt as _;

/// CallEvents that may wait for the event writer before new ones are dropped and counted.
const EVENT_QUEUE: usize = 65_536;
/// Initial read and write buffer of each carrier WebSocket (bytes).
const SOCKET_BUFFER: usize = 8 * 1024;
/// How long closed calls get to say goodbye after the grace period.
const FINAL_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A config value is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The default agent is unknown.
    #[error("--agent: {0}")]
    Agent(#[from] AgentError),
    /// The conversation pipeline cannot start (a missing or refused provider key).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The database could not be opened or migrated, or the admin key not stored.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The metric registry could not be built.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The listen address could not be bound, or the server failed.
    #[error("listen on {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Shared state of the HTTP routes.
#[derive(Clone)]
pub struct Gateway {
    pipeline: Arc<Pipeline>,
    deps: Arc<SessionDeps>,
    auth: Arc<AuthSettings>,
    max_message_bytes: usize,
    max_streams: usize,
    draining: Arc<AtomicBool>,
    tracker: TaskTracker,
    control: Option<ControlState>,
    store_readiness: StoreReadiness,
}

impl Gateway {
    /// Builds the gateway's shared state from a validated config; CallEvents are logged.
    /// Must be called inside a Tokio runtime (the event logger is a task).
    pub fn new(config: &Config) -> Result<Self, ServeError> {
        let metrics = Metrics::new()?;
        let events = EventSink::spawn_logger(EVENT_QUEUE, Some(metrics.clone()));
        Gateway::with_events(config, metrics, events)
    }

    /// Builds the gateway with its CallEvents going to `events`.
    pub fn with_events(
        config: &Config,
        metrics: Metrics,
        events: EventSink,
    ) -> Result<Self, ServeError> {
        let pipeline = Pipeline::build(config, &metrics)?;
        Gateway::with_pipeline(config, metrics, events, pipeline)
    }

    /// Builds the gateway around a pipeline already built from `config` (e.g. with more
    /// agents registered in its catalog), its CallEvents going to `events`.
    pub fn with_pipeline(
        config: &Config,
        metrics: Metrics,
        events: EventSink,
        pipeline: Pipeline,
    ) -> Result<Self, ServeError> {
        pipeline.warm_fallback();
        let deps = SessionDeps {
            settings: Arc::new(CallSettings::from_config(config)?),
            agents: Arc::new(pipeline.agents.clone()),
            registry: Arc::new(Registry::new()),
            events,
            metrics,
            hangup_all: CancellationToken::new(),
            stt: pipeline.stt.clone(),
            control: crate::call::carrier_control::from_config(config)?,
            directory: None,
        };
        Ok(Gateway {
            pipeline: Arc::new(pipeline),
            deps: Arc::new(deps),
            auth: Arc::new(config.auth.clone()),
            max_message_bytes: config.limits.max_message_bytes,
            max_streams: config.limits.max_streams,
            draining: Arc::new(AtomicBool::new(false)),
            tracker: TaskTracker::new(),
            control: None,
            store_readiness: StoreReadiness::ready(),
        })
    }

    /// Serves the control plane's API and webhooks too (see [`crate::control`]).
    pub fn with_control(mut self, control: ControlState) -> Self {
        self.control = Some(control);
        self
    }

    /// Answers the control plane's routes with 503 while `readiness` says the store is not
    /// usable yet (the database was unreachable at start).
    pub fn with_store_readiness(mut self, readiness: StoreReadiness) -> Self {
        self.store_readiness = readiness;
        self
    }

    /// The agent a stream runs when nothing chooses one (after the config and the loaded
    /// scripts are taken into account).
    pub fn default_agent(&self) -> &str {
        self.pipeline.agents.default_name()
    }

    /// Checks the providers' keys (see [`Pipeline::check_credentials`]).
    pub async fn check_credentials(&self) -> Result<(), ServeError> {
        Ok(self.pipeline.check_credentials().await?)
    }

    /// The conversation pipeline (agents, tenants' scripts), for the control plane.
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.pipeline.clone()
    }

    /// The same gateway, looking calls created on other instances up in `directory`
    /// (call before serving).
    pub fn with_call_directory(mut self, directory: Arc<dyn CallDirectory>) -> Self {
        Arc::make_mut(&mut self.deps).directory = Some(directory);
        self
    }

    /// The registry of live calls (for the control plane).
    pub fn registry(&self) -> Arc<Registry> {
        self.deps.registry.clone()
    }

    /// The metric families.
    pub fn metrics(&self) -> &Metrics {
        &self.deps.metrics
    }

    /// The routes.
    pub fn router(&self) -> Router {
        let media = Router::new()
            .route("/stream/twilio", get(stream_twilio))
            .route("/stream/exotel", get(stream_exotel))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .with_state(self.clone());
        match &self.control {
            Some(control) => {
                let readiness = self.store_readiness.clone();
                let api =
                    crate::control::router(control.clone()).route_layer(axum::middleware::from_fn(
                        move |request, next| refuse_until_ready(readiness.clone(), request, next),
                    ));
                media.merge(api)
            }
            None => media,
        }
    }

    fn upgrade(&self, carrier: CarrierKind, request: UpgradeRequest) -> Response {
        let reject = |status: StatusCode, reason: &str, message: &str| {
            self.deps
                .metrics
                .streams_rejected
                .with_label_values(&[carrier.as_str(), reason])
                .inc();
            error(status, reason, message)
        };
        if self.draining.load(Ordering::Relaxed) {
            return reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "the gateway is shutting down",
            );
        }
        if let Err(why) = self.authorize(carrier, &request.headers, &request.uri) {
            tracing::warn!(%carrier, %why, "stream refused");
            let mut response = reject(StatusCode::UNAUTHORIZED, "unauthorized", &why);
            if carrier == CarrierKind::Exotel {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"voicegw\""),
                );
            }
            return response;
        }
        if self.tracker.len() >= self.max_streams {
            return reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "capacity",
                &format!("at capacity ({} streams)", self.max_streams),
            );
        }
        let ws = match request.ws {
            Ok(ws) => ws,
            Err(rejection) => {
                return reject(
                    StatusCode::UPGRADE_REQUIRED,
                    "websocket_required",
                    &format!("this endpoint takes a WebSocket upgrade: {rejection}"),
                );
            }
        };
        let deps = self.deps.clone();
        let tracker = self.tracker.clone();
        // Carrier frames are small (a Twilio media message is ~300 bytes, our largest outbound
        // one ~6 KiB): start the socket buffers small; they grow up to the message limit.
        ws.max_message_size(self.max_message_bytes)
            .max_frame_size(self.max_message_bytes)
            .read_buffer_size(SOCKET_BUFFER)
            .write_buffer_size(SOCKET_BUFFER)
            .on_upgrade(move |socket| tracker.track_future(serve_call(socket, carrier, deps)))
    }

    /// Checks the carrier's credentials on a stream upgrade, where configured.
    fn authorize(
        &self,
        carrier: CarrierKind,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<(), String> {
        match carrier {
            CarrierKind::Twilio => {
                let Some(token) = &self.auth.twilio_auth_token else {
                    return Ok(());
                };
                let signature = headers
                    .get("x-twilio-signature")
                    .and_then(|v| v.to_str().ok())
                    .ok_or("missing X-Twilio-Signature")?;
                let base = match &self.auth.public_url {
                    // Twilio signs the stream's wss:// URL, whatever the public URL's scheme.
                    Some(url) => crate::control::dial::ws_base(url),
                    None => {
                        let host = headers
                            .get(header::HOST)
                            .and_then(|v| v.to_str().ok())
                            .ok_or("no Host header to check the signature against")?;
                        format!("wss://{host}")
                    }
                };
                let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                if signature::verify_twilio(token, &format!("{base}{path}"), &[], signature) {
                    Ok(())
                } else {
                    Err("X-Twilio-Signature does not match".into())
                }
            }
            CarrierKind::Exotel => {
                let Some(credentials) = &self.auth.exotel_credentials else {
                    return Ok(());
                };
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or("missing Basic credentials")?;
                if signature::verify_basic(credentials, authorization) {
                    Ok(())
                } else {
                    Err("wrong Basic credentials".into())
                }
            }
        }
    }

    /// Serves on `listener` until `shutdown` resolves, then drains live calls for up to `grace`.
    pub async fn run(
        self,
        listener: TcpListener,
        grace: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let stop_accepting = CancellationToken::new();
        // Every outbound message (a media chunk, then its mark) is its own small write: with
        // Nagle's algorithm on, the second would wait for the carrier's delayed ACK (~40 ms).
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set");
            }
        });
        let server = axum::serve(listener, self.router())
            .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
        let mut server = tokio::spawn(async move { server.await });
        tokio::select! {
            () = shutdown => {}
            result = &mut server => {
                return match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(source)) => Err(ServeError::Io { addr, source }),
                    Err(join) => Err(ServeError::Io { addr, source: std::io::Error::other(join) }),
                };
            }
        }
        self.draining.store(true, Ordering::Relaxed);
        stop_accepting.cancel();
        self.tracker.close();
        tracing::info!(
            live_calls = self.deps.registry.len(),
            open_streams = self.tracker.len(),
            grace_secs = grace.as_secs(),
            "shutting down: no new calls; waiting for live calls to finish"
        );
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open_streams = self.tracker.len(),
                "grace period over; closing live calls"
            );
            self.deps.hangup_all.cancel();
            let _ = tokio::time::timeout(FINAL_CLOSE_WAIT, self.tracker.wait()).await;
        }
        let _ = tokio::time::timeout(FINAL_CLOSE_WAIT, server).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Opens the store (creating and migrating it), stores or makes the first SUPERADMIN key, and
/// starts the CallEvent writer publishing to `hub` (the live event feed); returns the store,
/// the writer's sink and its task.
pub async fn open_store(
    config: &Config,
    metrics: &Metrics,
    hub: EventHub,
) -> Result<(Store, EventSink, tokio::task::JoinHandle<WriterStats>), ServeError> {
    let options = OpenOptions {
        max_connections: config.store.max_connections,
        ..OpenOptions::default()
    };
    let store = Store::open_with(&config.store.url, &options).await?;
    bootstrap_admin_key(&store, config).await?;
    let (events, task) = start_writer(&store, config, metrics, hub);
    Ok((store, events, task))
}

/// Stores `VOICEGW_ADMIN_KEY`, or makes the first SUPERADMIN key when the store has none.
async fn bootstrap_admin_key(store: &Store, config: &Config) -> Result<(), ServeError> {
    match ensure_admin_key(store, config.api.admin_key.as_deref()).await? {
        Bootstrap::Generated(secret) => {
            // Shown once, on the console of the first start: it is stored only as a hash.
            eprintln!(
                "voicegw: the database had no API key; this SUPERADMIN key was created and will \
                 not be shown again:\n\n    {secret}\n"
            );
            tracing::warn!("created the first SUPERADMIN API key (printed on stderr)");
        }
        Bootstrap::ConfiguredKeyStored => tracing::info!("stored VOICEGW_ADMIN_KEY"),
        Bootstrap::ConfiguredKeyPresent | Bootstrap::KeysExist => {}
    }
    Ok(())
}

/// Starts the CallEvent writer into `store`, spooling to `[store] spool_path`.
fn start_writer(
    store: &Store,
    config: &Config,
    metrics: &Metrics,
    hub: EventHub,
) -> (EventSink, tokio::task::JoinHandle<WriterStats>) {
    let writer = WriterConfig {
        spool_path: config.store.spool_path.clone(),
        ..WriterConfig::default()
    };
    spawn_event_writer(store.clone(), writer, Some(metrics.clone()), hub)
}

/// How often a database unreachable at start is tried again.
const STORE_RETRY_EVERY: Duration = Duration::from_secs(2);

/// A store opened by [`open_store_or_defer`].
pub struct OpenedStore {
    /// The store (its pool connects lazily when the database was unreachable).
    pub store: Store,
    /// The CallEvent writer's sink.
    pub events: EventSink,
    /// The writer's task.
    pub writer: tokio::task::JoinHandle<WriterStats>,
    /// Whether the store is migrated and usable.
    pub readiness: StoreReadiness,
    /// The task migrating the database once it is reachable, if it was not at start.
    pub migrator: Option<tokio::task::JoinHandle<()>>,
}

/// Like [`open_store`], but a PostgreSQL database that cannot be reached does not stop the
/// start: calls are served and their CallEvents spooled, while a background task retries the
/// migrations (and the admin key) every few seconds and then marks the store ready.
pub async fn open_store_or_defer(
    config: &Config,
    metrics: &Metrics,
    hub: EventHub,
) -> Result<OpenedStore, ServeError> {
    let error = match open_store(config, metrics, hub.clone()).await {
        Ok((store, events, writer)) => {
            return Ok(OpenedStore {
                store,
                events,
                writer,
                readiness: StoreReadiness::ready(),
                migrator: None,
            });
        }
        Err(ServeError::Store(error)) if is_unreachable(&config.store.url, &error) => error,
        Err(error) => return Err(error),
    };
    tracing::error!(
        %error,
        spool = %config.store.spool_path.display(),
        retry_secs = STORE_RETRY_EVERY.as_secs(),
        "DATABASE UNREACHABLE at start: serving calls anyway and spooling their CallEvents; \
         the API answers 503 until the database is reached and migrated"
    );
    let options = OpenOptions {
        max_connections: config.store.max_connections,
        migrate: false,
        ..OpenOptions::default()
    };
    let store = Store::open_with(&config.store.url, &options).await?;
    let readiness = StoreReadiness::default();
    let migrator = {
        let (store, config, readiness) = (store.clone(), config.clone(), readiness.clone());
        tokio::spawn(async move {
            loop {
                migrate_when_reachable(&config.store.url, STORE_RETRY_EVERY).await;
                match bootstrap_admin_key(&store, &config).await {
                    Ok(()) => break,
                    Err(error) => tracing::error!(%error, "admin key not stored; retrying"),
                }
                tokio::time::sleep(STORE_RETRY_EVERY).await;
            }
            readiness.set_ready();
            tracing::info!("store ready: the API is available");
        })
    };
    let (events, writer) = start_writer(&store, config, metrics, hub);
    Ok(OpenedStore {
        store,
        events,
        writer,
        readiness,
        migrator: Some(migrator),
    })
}

/// Answers 503 while the store is not usable; passes the request on once it is.
async fn refuse_until_ready(
    readiness: StoreReadiness,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if readiness.is_ready() {
        next.run(request).await
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the database is unreachable; try again later",
        )
    }
}

/// How long the CallEvent writer gets to store the last events after the server stops.
const WRITER_FLUSH_WAIT: Duration = Duration::from_secs(10);

/// Binds `config.listen` and serves until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let metrics = Metrics::new()?;
    // The control plane's live event streams subscribe here.
    let hub = EventHub::default();
    let OpenedStore {
        store,
        events,
        writer,
        readiness,
        migrator,
    } = open_store_or_defer(&config, &metrics, hub.clone()).await?;
    let gateway = Gateway::with_events(&config, metrics, events)?.with_store_readiness(readiness);
    let plane = Arc::new(
        crate::control::call_plane::CallPlane::new(
            gateway.pipeline(),
            crate::control::dial::carriers_from_config(&config)?,
            config.auth.exotel_credentials.clone(),
            hub,
        )
        .with_metrics(gateway.metrics().clone()),
    );
    let gateway =
        gateway.with_call_directory(Arc::new(crate::control::call_plane::StoreDirectory {
            store: store.clone(),
            plane: plane.clone(),
        }));
    let dialer = if config.dialer.enabled {
        match crate::dialer::run::start_dialer(
            &config,
            store.clone(),
            plane.clone(),
            gateway.registry(),
            gateway.metrics(),
        )
        .await
        {
            Ok(dialer) => Some(dialer),
            Err(error) => {
                tracing::warn!(%error, "the dialer does not run in this process");
                None
            }
        }
    } else {
        None
    };
    let control = ControlState::new(ControlDeps {
        store: store.clone(),
        registry: gateway.registry(),
        public_url: config.auth.public_url.clone(),
        twilio_auth_token: config.auth.twilio_auth_token.clone(),
        calls: Some(plane),
    });
    let gateway = gateway.with_control(control);
    if config.check_credentials {
        gateway.check_credentials().await?;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Io {
            addr: config.listen.to_string(),
            source,
        })?;
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(config.listen),
        agent = %gateway.pipeline.agents.default_name(),
        store = ?store.backend(),
        "voicegw serving"
    );
    let result = gateway
        .run(listener, config.shutdown_grace(), shutdown_signal())
        .await;
    if let Some(dialer) = dialer {
        dialer.stop().await;
    }
    if let Some(migrator) = migrator {
        migrator.abort();
    }
    match tokio::time::timeout(WRITER_FLUSH_WAIT, writer).await {
        Ok(Ok(stats)) => tracing::info!(?stats, "CallEvent writer stopped"),
        Ok(Err(error)) => tracing::error!(%error, "CallEvent writer failed"),
        Err(_) => tracing::warn!("CallEvent writer still busy; unstored events stay in the spool"),
    }
    store.close().await;
    result
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// What a stream upgrade brings.
struct UpgradeRequest {
    headers: HeaderMap,
    uri: Uri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
}

async fn stream_twilio(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    gateway.upgrade(CarrierKind::Twilio, UpgradeRequest { headers, uri, ws })
}

async fn stream_exotel(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    gateway.upgrade(CarrierKind::Exotel, UpgradeRequest { headers, uri, ws })
}

async fn healthz(State(gateway): State<Gateway>) -> Response {
    let draining = gateway.draining.load(Ordering::Relaxed);
    let body = Json(json!({
        "status": if draining { "draining" } else { "ok" },
        "live_calls": gateway.deps.registry.len(),
        "open_streams": gateway.tracker.len(),
        "store": if gateway.store_readiness.is_ready() { "ok" } else { "unavailable" },
        "version": env!("CARGO_PKG_VERSION"),
    }));
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, body).into_response()
}

async fn metrics(State(gateway): State<Gateway>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gateway.deps.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// A JSON error response.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}
