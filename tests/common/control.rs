//! A gateway with its control plane on a test store, and a small JSON client for the API.

use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use voicegw::config::Config;
use voicegw::control::bootstrap::ensure_admin_key;
use voicegw::control::call_plane::CallPlane;
use voicegw::control::dial::{Carriers, NoCarriers};
use voicegw::control::{ControlDeps, ControlState};
use voicegw::store::events::{WriterConfig, spawn_event_writer};
use voicegw::store::hub::EventHub;

use super::TestGateway;
use super::db::TestDb;

/// The SUPERADMIN key every control-plane test gateway starts with.
pub const ADMIN_KEY: &str = "vgw_test_superadmin_key_0123456789abcdef";

/// A gateway serving the control plane on a test database, with its CallEvents going through
/// the real writer into that database.
pub struct TestControl {
    pub gw: TestGateway,
    pub db: TestDb,
    pub http: reqwest::Client,
}

impl TestControl {
    /// Starts on `db` with `config` (see [`super::test_config`]), with no carrier.
    pub async fn start(db: TestDb, config: Config) -> TestControl {
        TestControl::start_with_carriers(db, config, Arc::new(NoCarriers)).await
    }

    /// Starts on `db` with `config`, placing calls through `carriers`.
    pub async fn start_with_carriers(
        db: TestDb,
        config: Config,
        carriers: Arc<dyn Carriers>,
    ) -> TestControl {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        TestControl::start_on(listener, db, config, carriers).await
    }

    /// Starts on `listener` (bound beforehand, so `config` may name its address as the
    /// public URL).
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        db: TestDb,
        config: Config,
        carriers: Arc<dyn Carriers>,
    ) -> TestControl {
        let exotel_credentials = config.auth.exotel_credentials.clone();
        let hub = EventHub::default();
        let writer_hub = hub.clone();
        ensure_admin_key(&db.store, Some(ADMIN_KEY)).await.unwrap();
        let store = db.store.clone();
        let spool = db.spool();
        let (_unused, events) = tokio::sync::mpsc::channel(1);
        let public_url = config.auth.public_url.clone();
        let twilio_auth_token = config.auth.twilio_auth_token.clone();
        let control_store = store.clone();
        let gw = TestGateway::start_full_on(
            listener,
            config,
            |_, _| {},
            move |metrics| {
                let writer = WriterConfig {
                    spool_path: spool,
                    max_delay: std::time::Duration::from_millis(5),
                    ..WriterConfig::default()
                };
                spawn_event_writer(store, writer, Some(metrics.clone()), writer_hub).0
            },
            events,
            move |gateway| {
                let control = ControlState::new(ControlDeps {
                    store: control_store,
                    registry: gateway.registry(),
                    public_url,
                    twilio_auth_token,
                    calls: Some(Arc::new(
                        CallPlane::new(gateway.pipeline(), carriers, exotel_credentials, hub)
                            .with_metrics(gateway.metrics().clone()),
                    )),
                });
                gateway.with_control(control)
            },
        )
        .await;
        TestControl {
            gw,
            db,
            http: reqwest::Client::new(),
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        self.gw.http_url(path)
    }

    /// Sends `method path` with `key` as bearer (none when `None`) and `body` as JSON;
    /// returns the status and the JSON body (`Value::Null` when the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET path` as `key`.
    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, Some(key), None).await
    }

    /// `POST path` as `key` with a JSON body.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(key), Some(body))
            .await
    }

    /// `DELETE path` as `key`.
    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, Some(key), None)
            .await
    }
}

/// Asserts an API error's status and code, returning its message.
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) -> String {
    assert_eq!(got.0.as_u16(), status, "{:?}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{:?}", got.1);
    got.1["error"]["message"]
        .as_str()
        .expect("error message")
        .to_owned()
}
