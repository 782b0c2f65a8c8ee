//! One typed [`Config`], built from defaults, an optional TOML file and the environment/CLI,
//! and validated once at start-up so that a bad value stops the process with a clear message
//! instead of misbehaving mid-call.
//!
//! Precedence (later wins): built-in defaults → `--config FILE` (TOML) → `VOICEGW_*`
//! environment variables and command-line flags (clap reads both).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::audio::echo::EchoConfig;
use crate::audio::vad::{VadBackend, VadConfig};
use crate::call::egress::EgressConfig;
use crate::call::turn::TurnConfig;

/// Everything the gateway reads at start-up.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP/WebSocket server binds.
    pub listen: SocketAddr,
    /// The agent that serves a stream whose `start` names no known call (`echo`, `llm`,
    /// `script:<name>`); unset means `[script] default` when set, else `llm` when a language
    /// model is configured, else the offline appointment script (see [`Config::agent_name`]).
    pub agent: Option<String>,
    /// Seconds live calls may run on after SIGTERM before they are closed.
    pub shutdown_grace_secs: u64,
    /// Voice activity detection.
    pub vad: VadSettings,
    /// Turn-taking and barge-in.
    pub turn: TurnConfig,
    /// Outbound audio pacing: chunk size, lead over playback, mark time-out.
    pub egress: EgressConfig,
    /// Telling the caller's speech from the bot's own audio coming back (speakerphone echo).
    pub echo: EchoConfig,
    /// Limits that protect the gateway from a misbehaving carrier connection.
    pub limits: StreamLimits,
    /// Detect DTMF tones in the audio when the carrier sends no `dtmf` events.
    pub inband_dtmf: bool,
    /// Who may open a carrier stream.
    pub auth: AuthSettings,
    /// Speech-to-text.
    pub stt: SttSettings,
    /// The language model (OpenAI-compatible).
    pub llm: crate::llm::openai::OpenAiConfig,
    /// Text-to-speech.
    pub tts: TtsSettings,
    /// The `llm` agent's conversation settings.
    pub conversation: crate::call::conversation::ConversationConfig,
    /// The tools the gateway runs for the model.
    pub tools: crate::llm::tools::ToolsConfig,
    /// Scripted calls and the prompt cache.
    pub script: ScriptSettings,
    /// Check provider keys at start-up (a refused key stops the gateway).
    pub check_credentials: bool,
    /// Twilio's REST API: transfers and texts on Twilio calls.
    pub twilio: TwilioSettings,
    /// Exotel call control.
    pub exotel: ExotelSettings,
    /// The durable store of tenants, calls and CallEvents.
    pub store: StoreSettings,
    /// The control plane's REST API.
    pub api: ApiSettings,
    /// The outbound dialer (campaign job queue, rate limits).
    pub dialer: DialerSettings,
}

/// The outbound dialer: the workers that take campaign jobs from the queue and dial them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialerSettings {
    /// Run dialer workers inside `serve` (a separate `voicegw worker` runs them too).
    pub enabled: bool,
    /// Most jobs one process works on at once (claimed, preparing or being dialled).
    pub concurrency: u32,
    /// How long a claimed job is held before another worker may take it over (s).
    pub lease_secs: u64,
    /// How often an idle worker looks for due jobs (ms).
    pub poll_ms: u64,
    /// Calls per second started on the Twilio account (shared by every instance with Redis).
    pub twilio_cps: u32,
    /// Calls per second started on the Exotel account.
    pub exotel_cps: u32,
    /// `redis://…` for the limiter shared by every instance (`VOICEGW_REDIS_URL`); without
    /// it each process limits its own starts.
    pub redis_url: Option<String>,
    /// Most campaign calls live at once per tenant (a tenant's own cap, set in the store,
    /// is applied too); `None`: no gateway-wide cap.
    pub max_live_calls_per_tenant: Option<u32>,
    /// An attempt not yet over whose call has not changed for this long is looked up at the
    /// carrier (by its id, or by its numbers when the carrier's id was never recorded), at
    /// most once per this period: status callbacks lost while the gateway was down (s).
    pub stale_after_secs: u64,
    /// An attempt with no carrier id this long after its last change is looked up at the
    /// carrier: the carrier's answer to the dial was lost, e.g. in a crash (s).
    pub unplaced_after_secs: u64,
}

impl Default for DialerSettings {
    fn default() -> Self {
        DialerSettings {
            enabled: true,
            concurrency: 256,
            lease_secs: 30,
            poll_ms: 250,
            twilio_cps: 1,
            exotel_cps: 1,
            redis_url: None,
            max_live_calls_per_tenant: None,
            stale_after_secs: 300,
            unplaced_after_secs: 60,
        }
    }
}

/// Where tenants, calls and CallEvents are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite://PATH` (embedded, created on first run) or `postgres://…`
    /// (`VOICEGW_DATABASE_URL`).
    pub url: String,
    /// Where CallEvents wait while the database is unreachable (replayed in order).
    pub spool_path: PathBuf,
    /// Most database connections.
    pub max_connections: u32,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: crate::store::DEFAULT_URL.to_owned(),
            spool_path: PathBuf::from("data/events.spool"),
            max_connections: 8,
        }
    }
}

/// The REST API's settings.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// A SUPERADMIN key secret (`vgw_…`) stored at start-up (`VOICEGW_ADMIN_KEY`); without it,
    /// an empty database gets a generated key, printed once.
    pub admin_key: Option<String>,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("admin_key", &self.admin_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Twilio's REST API, used to transfer live Twilio calls and to text from their numbers. The
/// password is the account's auth token, `auth.twilio_auth_token` (`TWILIO_AUTH_TOKEN`), the
/// same token that signs the media streams.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwilioSettings {
    /// Account SID, `AC` + 32 hex digits (`TWILIO_ACCOUNT_SID`); unset: no REST actions.
    pub account_sid: Option<String>,
    /// API base URL (`TWILIO_BASE_URL`).
    pub base_url: String,
    /// The number a transferred call shows to the person dialled (E.164); unset: Twilio's
    /// default, the caller's own number.
    pub caller_id: Option<String>,
    /// Longest one REST request may take (ms).
    pub request_timeout_ms: u64,
    /// Attempts per request in all (1 = no retry); only failures Twilio did not act on, or
    /// harmless to repeat, are retried.
    pub max_attempts: u32,
    /// Most time spent waiting between attempts of one request, summed (ms).
    pub retry_budget_ms: u64,
}

impl Default for TwilioSettings {
    fn default() -> Self {
        TwilioSettings {
            account_sid: None,
            base_url: crate::carrier::twilio_api::DEFAULT_BASE_URL.to_owned(),
            caller_id: None,
            request_timeout_ms: 5_000,
            max_attempts: 3,
            retry_budget_ms: 500,
        }
    }
}

/// Backoff before the first retry of a Twilio request; it doubles per retry.
const TWILIO_INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Exotel call control. Exotel's Voicebot applet hands the call on to the next applet of the
/// flow when the stream closes (`specs/telephony.md` §3.5); that is the only transfer the
/// gateway can make on an Exotel call, and the flow, not the gateway, picks the destination.
///
/// With `account_sid`, `api_key` and `api_token` the gateway can also place Connect Voice AI
/// calls (§3.6 B) from `caller_id`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExotelSettings {
    /// The flow has a transfer (Connect) applet after the Voicebot applet: a transfer ends the
    /// stream and the flow goes on. Leave off for Connect Voice AI calls (no flow: closing the
    /// stream hangs up).
    pub flow_transfer: bool,
    /// Account SID (`EXOTEL_ACCOUNT_SID`); unset: no outbound Exotel calls.
    pub account_sid: Option<String>,
    /// API key, Basic auth user (`EXOTEL_API_KEY`).
    pub api_key: Option<String>,
    /// API token, Basic auth password (`EXOTEL_API_TOKEN`).
    pub api_token: Option<String>,
    /// API base URL, the account's cluster (`EXOTEL_BASE_URL`).
    pub base_url: String,
    /// The ExoPhone outbound calls show (`EXOTEL_CALLER_ID`).
    pub caller_id: Option<String>,
    /// Longest one REST request may take (ms).
    pub request_timeout_ms: u64,
    /// Attempts per request in all (1 = no retry); only requests Exotel did not act on are
    /// retried.
    pub max_attempts: u32,
    /// Most time spent waiting between attempts of one request, summed (ms).
    pub retry_budget_ms: u64,
}

impl Default for ExotelSettings {
    fn default() -> Self {
        ExotelSettings {
            flow_transfer: false,
            account_sid: None,
            api_key: None,
            api_token: None,
            base_url: crate::carrier::exotel_api::DEFAULT_BASE_URL.to_owned(),
            caller_id: None,
            request_timeout_ms: 5_000,
            max_attempts: 3,
            retry_budget_ms: 500,
        }
    }
}

impl std::fmt::Debug for ExotelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExotelSettings")
            .field("flow_transfer", &self.flow_transfer)
            .field("account_sid", &self.account_sid)
            .field("api_key", &self.api_key)
            .field("api_token", &self.api_token.as_deref().map(redacted))
            .field("base_url", &self.base_url)
            .field("caller_id", &self.caller_id)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("max_attempts", &self.max_attempts)
            .field("retry_budget_ms", &self.retry_budget_ms)
            .finish()
    }
}

/// Text-to-speech settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtsSettings {
    /// `deepgram` (Aura), `elevenlabs` or `openai`.
    pub provider: String,
    /// Deepgram Aura.
    pub deepgram: crate::tts::deepgram::DeepgramTtsConfig,
    /// ElevenLabs.
    pub elevenlabs: crate::tts::elevenlabs::ElevenLabsConfig,
    /// OpenAI speech.
    pub openai: crate::tts::openai::OpenAiSpeechConfig,
}

impl Default for TtsSettings {
    fn default() -> Self {
        TtsSettings {
            provider: "deepgram".to_owned(),
            deepgram: Default::default(),
            elevenlabs: Default::default(),
            openai: Default::default(),
        }
    }
}

/// The script served when no provider key is configured at all (DTMF routing, recorded
/// prompts).
pub const OFFLINE_SCRIPT: &str = "appointment_confirmation";

/// Scripted calls (Destiny-Script, `docs/script.md`) and the prompt cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptSettings {
    /// Folder of scripts: every `*.dsc` file in it is served as agent `script:<file stem>`.
    pub dir: PathBuf,
    /// The prompt cache: pre-synthesized prompt audio and script manifests.
    pub cache_dir: PathBuf,
    /// The script (file stem in `dir`) that serves streams naming no known call when `agent`
    /// is unset.
    pub default: Option<String>,
    /// Variables every scripted call gets unless the call gives its own (e.g. `tenantName`).
    pub variables: BTreeMap<String, String>,
    /// The synthesizer voice for every script, instead of the scripts' `@voice`.
    pub voice: Option<String>,
    /// Recorded prompts (`prompts.tsv` + WAVs) played as the scripts' voice when no
    /// synthesizer key is configured.
    pub recorded_prompts: PathBuf,
}

impl Default for ScriptSettings {
    fn default() -> Self {
        ScriptSettings {
            dir: PathBuf::from("scripts"),
            cache_dir: PathBuf::from("data/prompt-cache"),
            default: None,
            variables: BTreeMap::new(),
            voice: None,
            recorded_prompts: PathBuf::from("fixtures/audio/prompts"),
        }
    }
}

impl ScriptSettings {
    /// The file of the script called `name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.dsc"))
    }
}

/// Whether `name` can name a script: the stem of a `.dsc` file, made of ASCII letters, digits,
/// `_` and `-`.
pub fn is_script_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// How a secret (an API key) appears in `Debug` output and logs.
pub fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        "<empty>"
    } else {
        "<redacted>"
    }
}

/// Speech-to-text settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SttSettings {
    /// Which caller audio is sent.
    pub gate: SttGateConfig,
    /// Deepgram live transcription.
    pub deepgram: crate::stt::deepgram::DeepgramSttConfig,
}

/// Which caller audio goes to the recognizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SttGateConfig {
    /// Send every frame, silence included (costs more; no `KeepAlive` needed).
    pub send_silence: bool,
    /// Audio kept from before speech starts and sent with it (ms).
    pub preroll_ms: u32,
    /// Audio still sent after the caller's last speech (ms), so the recognizer hears the
    /// silence that ends a turn.
    pub hangover_ms: u32,
}

impl Default for SttGateConfig {
    fn default() -> Self {
        SttGateConfig {
            send_silence: false,
            preroll_ms: 300,
            hangover_ms: 1_500,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            agent: None,
            shutdown_grace_secs: 30,
            vad: VadSettings::default(),
            turn: TurnConfig::default(),
            egress: EgressConfig::default(),
            echo: EchoConfig::default(),
            limits: StreamLimits::default(),
            inband_dtmf: true,
            auth: AuthSettings::default(),
            stt: SttSettings::default(),
            llm: Default::default(),
            tts: TtsSettings::default(),
            conversation: Default::default(),
            tools: Default::default(),
            script: ScriptSettings::default(),
            check_credentials: true,
            twilio: TwilioSettings::default(),
            exotel: ExotelSettings::default(),
            store: StoreSettings::default(),
            api: ApiSettings::default(),
            dialer: DialerSettings::default(),
        }
    }
}

/// VAD choices, as written in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VadSettings {
    /// `webrtc` (native 8 kHz, cheapest) or `earshot` (pure Rust, runs at 16 kHz).
    pub backend: String,
    /// webrtc-vad aggressiveness, 0 (least) to 3 (most).
    pub webrtc_mode: u8,
    /// earshot score above which a frame is voiced (0–1).
    pub earshot_threshold: f32,
    /// Frames quieter than this (dBFS) are never voiced.
    pub energy_floor_dbfs: f32,
}

impl Default for VadSettings {
    fn default() -> Self {
        let d = VadConfig::default();
        VadSettings {
            backend: d.backend.as_str().to_owned(),
            webrtc_mode: d.webrtc_mode,
            earshot_threshold: d.earshot_threshold,
            energy_floor_dbfs: d.energy_floor_dbfs,
        }
    }
}

/// Authentication of carrier streams. Unset means open (for a private network or a proxy that
/// authenticates); set it wherever the gateway is reachable from the internet.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Twilio auth token: when set, every `/stream/twilio` upgrade must carry a valid
    /// `X-Twilio-Signature` (`TWILIO_AUTH_TOKEN`).
    pub twilio_auth_token: Option<String>,
    /// `KEY:TOKEN`: when set, every `/stream/exotel` upgrade must carry these Basic credentials
    /// (give Exotel `wss://KEY:TOKEN@host/stream/exotel`) (`VOICEGW_EXOTEL_CREDENTIALS`).
    pub exotel_credentials: Option<String>,
    /// The base URL carriers use to reach the gateway, e.g. `https://gw.example.com`, for
    /// signature checks behind a proxy that rewrites the host (`VOICEGW_PUBLIC_URL`); without
    /// it the request's `Host` is used.
    pub public_url: Option<String>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| if s.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("AuthSettings")
            .field("twilio_auth_token", &secret(&self.twilio_auth_token))
            .field("exotel_credentials", &secret(&self.exotel_credentials))
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// Protection against bad or hostile carrier connections.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StreamLimits {
    /// Largest WebSocket message accepted (bytes); a larger one closes the call (1009).
    pub max_message_bytes: usize,
    /// Seconds a new connection has to send `start`.
    pub start_timeout_secs: u64,
    /// Malformed frames tolerated within `bad_frame_window_secs` before the call is closed (1008).
    pub bad_frame_limit: u32,
    /// The window for `bad_frame_limit`, in seconds.
    pub bad_frame_window_secs: u64,
    /// Seconds without any frame from the carrier after which a live call is closed (1008).
    pub idle_timeout_secs: u64,
    /// Most carrier streams open at once; more are refused with 503 so the calls already up
    /// keep their latency.
    pub max_streams: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_message_bytes: 64 * 1024,
            start_timeout_secs: 10,
            bad_frame_limit: 20,
            bad_frame_window_secs: 10,
            idle_timeout_secs: 15,
            max_streams: 5_000,
        }
    }
}

/// A config value that cannot work, with the key that holds it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// The path given.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is out of its range.
    #[error("config `{key}`: {message}")]
    Invalid {
        /// The dotted key, e.g. `turn.barge_in_min_ms`.
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// Values given on the command line or in `VOICEGW_*` variables; `None` keeps the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` / `VOICEGW_LISTEN`.
    pub listen: Option<SocketAddr>,
    /// `--agent` / `VOICEGW_AGENT`.
    pub agent: Option<String>,
    /// `TWILIO_AUTH_TOKEN`.
    pub twilio_auth_token: Option<String>,
    /// `TWILIO_ACCOUNT_SID`.
    pub twilio_account_sid: Option<String>,
    /// `TWILIO_BASE_URL`.
    pub twilio_base_url: Option<String>,
    /// `VOICEGW_EXOTEL_CREDENTIALS`.
    pub exotel_credentials: Option<String>,
    /// `EXOTEL_ACCOUNT_SID`.
    pub exotel_account_sid: Option<String>,
    /// `EXOTEL_API_KEY`.
    pub exotel_api_key: Option<String>,
    /// `EXOTEL_API_TOKEN`.
    pub exotel_api_token: Option<String>,
    /// `EXOTEL_BASE_URL`.
    pub exotel_base_url: Option<String>,
    /// `EXOTEL_CALLER_ID`.
    pub exotel_caller_id: Option<String>,
    /// `VOICEGW_PUBLIC_URL`.
    pub public_url: Option<String>,
    /// `DEEPGRAM_API_KEY` (speech-to-text and Aura).
    pub deepgram_api_key: Option<String>,
    /// `DEEPGRAM_BASE_URL`.
    pub deepgram_base_url: Option<String>,
    /// `OPENAI_API_KEY` (chat and speech).
    pub openai_api_key: Option<String>,
    /// `OPENAI_BASE_URL`.
    pub openai_base_url: Option<String>,
    /// `OPENAI_MODEL`.
    pub openai_model: Option<String>,
    /// `ELEVENLABS_API_KEY`.
    pub elevenlabs_api_key: Option<String>,
    /// `ELEVENLABS_BASE_URL`.
    pub elevenlabs_base_url: Option<String>,
    /// `VOICEGW_TTS_PROVIDER`.
    pub tts_provider: Option<String>,
    /// `VOICEGW_DATABASE_URL`.
    pub database_url: Option<String>,
    /// `VOICEGW_ADMIN_KEY`.
    pub admin_key: Option<String>,
    /// `VOICEGW_REDIS_URL`.
    pub redis_url: Option<String>,
}

impl Config {
    /// The agent for streams that name no known call: the configured one, else the
    /// `[script] default` script, else `llm` when a language model is configured (an OpenAI
    /// key, or a non-default base URL for a self-hosted compatible server), else the offline
    /// appointment script ([`OFFLINE_SCRIPT`]).
    pub fn agent_name(&self) -> String {
        if let Some(agent) = &self.agent {
            return agent.clone();
        }
        if let Some(script) = &self.script.default {
            return format!("script:{script}");
        }
        if self.llm_configured() {
            "llm".to_owned()
        } else {
            format!("script:{OFFLINE_SCRIPT}")
        }
    }

    /// Whether the default agent is the offline script only because nothing else was chosen
    /// (no `agent`, no `[script] default`, no language model).
    pub fn offline_default(&self) -> bool {
        self.agent.is_none() && self.script.default.is_none() && !self.llm_configured()
    }

    /// Whether a language model is configured: an API key, or a non-default base URL (a
    /// self-hosted compatible server may need no key).
    pub fn llm_configured(&self) -> bool {
        let default_base = crate::llm::openai::OpenAiConfig::default().base_url;
        !self.llm.api_key.is_empty() || self.llm.base_url != default_base
    }

    /// The Twilio REST client settings, when an account is configured (`twilio.account_sid`
    /// with `auth.twilio_auth_token`).
    pub fn twilio_rest(&self) -> Option<crate::carrier::twilio_api::TwilioRestConfig> {
        let account_sid = self.twilio.account_sid.clone()?;
        let auth_token = self.auth.twilio_auth_token.clone()?;
        Some(crate::carrier::twilio_api::TwilioRestConfig {
            account_sid,
            auth_token,
            base_url: self.twilio.base_url.trim_end_matches('/').to_owned(),
            request_timeout: Duration::from_millis(self.twilio.request_timeout_ms),
            retry: crate::carrier::twilio_api::RetryPolicy {
                max_attempts: self.twilio.max_attempts,
                initial_backoff: TWILIO_INITIAL_BACKOFF,
                budget: Duration::from_millis(self.twilio.retry_budget_ms),
            },
        })
    }

    /// The Exotel REST client settings, when an account is configured (`exotel.account_sid`,
    /// `api_key` and `api_token`).
    pub fn exotel_rest(&self) -> Option<crate::carrier::exotel_api::ExotelRestConfig> {
        let e = &self.exotel;
        Some(crate::carrier::exotel_api::ExotelRestConfig {
            account_sid: e.account_sid.clone()?,
            api_key: e.api_key.clone()?,
            api_token: e.api_token.clone()?,
            base_url: e.base_url.trim_end_matches('/').to_owned(),
            request_timeout: Duration::from_millis(e.request_timeout_ms),
            retry: crate::carrier::twilio_api::RetryPolicy {
                max_attempts: e.max_attempts,
                initial_backoff: TWILIO_INITIAL_BACKOFF,
                budget: Duration::from_millis(e.retry_budget_ms),
            },
        })
    }

    /// Builds the config: defaults, then `file` (if any), then `overrides`; then validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(agent) = overrides.agent.as_ref().filter(|a| !a.is_empty()) {
            config.agent = Some(agent.clone());
        }
        let given = |v: &Option<String>| v.as_ref().filter(|v| !v.is_empty()).cloned();
        if let Some(key) = given(&overrides.deepgram_api_key) {
            config.stt.deepgram.api_key.clone_from(&key);
            config.tts.deepgram.api_key = key;
        }
        if let Some(url) = given(&overrides.deepgram_base_url) {
            config.stt.deepgram.base_url.clone_from(&url);
            config.tts.deepgram.base_url = url;
        }
        if let Some(key) = given(&overrides.openai_api_key) {
            config.llm.api_key.clone_from(&key);
            config.tts.openai.api_key = key;
        }
        if let Some(url) = given(&overrides.openai_base_url) {
            config.llm.base_url.clone_from(&url);
            config.tts.openai.base_url = url;
        }
        if let Some(model) = given(&overrides.openai_model) {
            config.llm.model = model;
        }
        if let Some(key) = given(&overrides.elevenlabs_api_key) {
            config.tts.elevenlabs.api_key = key;
        }
        if let Some(url) = given(&overrides.elevenlabs_base_url) {
            config.tts.elevenlabs.base_url = url;
        }
        if let Some(provider) = given(&overrides.tts_provider) {
            config.tts.provider = provider;
        }
        if let Some(url) = given(&overrides.database_url) {
            config.store.url = url;
        }
        if let Some(key) = given(&overrides.admin_key) {
            config.api.admin_key = Some(key);
        }
        if let Some(url) = given(&overrides.redis_url) {
            config.dialer.redis_url = Some(url);
        }
        if let Some(sid) = given(&overrides.twilio_account_sid) {
            config.twilio.account_sid = Some(sid);
        }
        if let Some(url) = given(&overrides.twilio_base_url) {
            config.twilio.base_url = url;
        }
        for (value, slot) in [
            (
                &overrides.exotel_account_sid,
                &mut config.exotel.account_sid,
            ),
            (&overrides.exotel_api_key, &mut config.exotel.api_key),
            (&overrides.exotel_api_token, &mut config.exotel.api_token),
            (&overrides.exotel_caller_id, &mut config.exotel.caller_id),
        ] {
            if let Some(value) = given(value) {
                *slot = Some(value);
            }
        }
        if let Some(url) = given(&overrides.exotel_base_url) {
            config.exotel.base_url = url;
        }
        for (value, slot) in [
            (
                &overrides.twilio_auth_token,
                &mut config.auth.twilio_auth_token,
            ),
            (
                &overrides.exotel_credentials,
                &mut config.auth.exotel_credentials,
            ),
            (&overrides.public_url, &mut config.auth.public_url),
        ] {
            if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                *slot = Some(value.clone());
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML file (unknown keys are errors, so a typo does not pass silently).
    pub fn from_toml_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml_str(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses TOML text.
    pub fn from_toml_str(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks every value against its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        if self.agent.as_deref().is_some_and(|a| a.trim().is_empty()) {
            return Err(invalid("agent", "must name an agent (e.g. `echo`, `llm`)"));
        }
        self.validate_script()?;
        if let Err(e) = crate::store::Backend::of_url(&self.store.url) {
            return Err(invalid("store.url", e.to_string()));
        }
        if self.store.max_connections == 0 {
            return Err(invalid("store.max_connections", "must be at least 1"));
        }
        self.validate_dialer()?;
        if !["deepgram", "elevenlabs", "openai"].contains(&self.tts.provider.as_str()) {
            return Err(invalid(
                "tts.provider",
                format!(
                    "unknown provider {:?}: use deepgram, elevenlabs or openai",
                    self.tts.provider
                ),
            ));
        }
        let c = &self.conversation;
        if !(200..=30_000).contains(&c.latency_budget_ms) {
            return Err(invalid(
                "conversation.latency_budget_ms",
                "must be 200–30000 ms",
            ));
        }
        if !(1..=10).contains(&c.max_tool_rounds) {
            return Err(invalid("conversation.max_tool_rounds", "must be 1–10"));
        }
        if c.max_history < 4 {
            return Err(invalid("conversation.max_history", "must be at least 4"));
        }
        if c.fallback_line.trim().is_empty() {
            return Err(invalid("conversation.fallback_line", "must not be empty"));
        }
        if self.turn.finalize_timeout_ms > 5_000 {
            return Err(invalid(
                "turn.finalize_timeout_ms",
                "must be at most 5000 ms",
            ));
        }
        if !(100..=5_000).contains(&self.turn.barge_in_confirm_ms) {
            return Err(invalid("turn.barge_in_confirm_ms", "must be 100–5000 ms"));
        }
        if self.turn.speculate_after_ms > self.turn.end_of_turn_silence_ms {
            return Err(invalid(
                "turn.speculate_after_ms",
                "must not exceed turn.end_of_turn_silence_ms (0 turns speculation off)",
            ));
        }
        if self.stt.gate.hangover_ms < 300 || self.stt.gate.hangover_ms > 10_000 {
            return Err(invalid("stt.gate.hangover_ms", "must be 300–10000 ms"));
        }
        if self.stt.gate.preroll_ms > 2_000 {
            return Err(invalid("stt.gate.preroll_ms", "must be at most 2000 ms"));
        }
        self.vad_config()?;
        let t = &self.turn;
        if !(20..=2_000).contains(&t.min_speech_ms) {
            return Err(invalid("turn.min_speech_ms", "must be 20–2000 ms"));
        }
        if !(100..=10_000).contains(&t.end_of_turn_silence_ms) {
            return Err(invalid(
                "turn.end_of_turn_silence_ms",
                "must be 100–10000 ms",
            ));
        }
        if !(20..=2_000).contains(&t.barge_in_min_ms) {
            return Err(invalid("turn.barge_in_min_ms", "must be 20–2000 ms"));
        }
        if t.preroll_ms > 2_000 {
            return Err(invalid("turn.preroll_ms", "must be at most 2000 ms"));
        }
        if !(1_000..=600_000).contains(&t.max_utterance_ms) {
            return Err(invalid("turn.max_utterance_ms", "must be 1000–600000 ms"));
        }
        let e = &self.egress;
        if !(20..=1_000).contains(&e.chunk_ms) {
            return Err(invalid("egress.chunk_ms", "must be 20–1000 ms"));
        }
        if e.max_lead_ms < e.chunk_ms || e.max_lead_ms > 5_000 {
            return Err(invalid(
                "egress.max_lead_ms",
                "must be at least egress.chunk_ms and at most 5000 ms",
            ));
        }
        if !(100..=60_000).contains(&e.mark_timeout_ms) {
            return Err(invalid("egress.mark_timeout_ms", "must be 100–60000 ms"));
        }
        if !(20..=2_000).contains(&self.echo.max_delay_ms) {
            return Err(invalid("echo.max_delay_ms", "must be 20–2000 ms"));
        }
        if !(0.0..=40.0).contains(&self.echo.margin_db) {
            return Err(invalid("echo.margin_db", "must be 0–40 dB"));
        }
        let l = &self.limits;
        if !(1_024..=16 * 1024 * 1024).contains(&l.max_message_bytes) {
            return Err(invalid("limits.max_message_bytes", "must be 1 KiB–16 MiB"));
        }
        if !(1..=300).contains(&l.start_timeout_secs) {
            return Err(invalid("limits.start_timeout_secs", "must be 1–300 s"));
        }
        if l.bad_frame_limit == 0 {
            return Err(invalid("limits.bad_frame_limit", "must be at least 1"));
        }
        if !(1..=3_600).contains(&l.bad_frame_window_secs) {
            return Err(invalid("limits.bad_frame_window_secs", "must be 1–3600 s"));
        }
        if !(1..=3_600).contains(&l.idle_timeout_secs) {
            return Err(invalid("limits.idle_timeout_secs", "must be 1–3600 s"));
        }
        if l.max_streams == 0 {
            return Err(invalid("limits.max_streams", "must be at least 1"));
        }
        let a = &self.auth;
        if a.twilio_auth_token.as_deref() == Some("") {
            return Err(invalid(
                "auth.twilio_auth_token",
                "is empty; leave it out to disable",
            ));
        }
        if let Some(credentials) = &a.exotel_credentials
            && !credentials
                .split_once(':')
                .is_some_and(|(k, t)| !k.is_empty() && !t.is_empty())
        {
            return Err(invalid("auth.exotel_credentials", "must be KEY:TOKEN"));
        }
        if let Some(url) = &a.public_url
            && !["https://", "http://", "wss://", "ws://"]
                .iter()
                .any(|p| url.starts_with(p))
        {
            return Err(invalid(
                "auth.public_url",
                format!("must start with https:// (or http://, wss://, ws://): {url:?}"),
            ));
        }
        self.validate_twilio()?;
        self.validate_exotel()
    }

    /// Checks `[exotel]`.
    fn validate_dialer(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: &str| ConfigError::Invalid {
            key,
            message: message.to_owned(),
        };
        let d = &self.dialer;
        if d.concurrency == 0 {
            return Err(invalid("dialer.concurrency", "must be at least 1"));
        }
        if !(5..=3_600).contains(&d.lease_secs) {
            return Err(invalid("dialer.lease_secs", "must be 5–3600"));
        }
        if !(10..=60_000).contains(&d.poll_ms) {
            return Err(invalid("dialer.poll_ms", "must be 10–60000"));
        }
        if d.twilio_cps == 0 || d.exotel_cps == 0 {
            return Err(invalid(
                "dialer.twilio_cps",
                "calls per second must be at least 1",
            ));
        }
        if let Some(url) = &d.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(invalid(
                "dialer.redis_url",
                "must be a redis:// or rediss:// URL",
            ));
        }
        if !(1..=86_400).contains(&d.stale_after_secs) {
            return Err(invalid("dialer.stale_after_secs", "must be 1–86400"));
        }
        if !(1..=3_600).contains(&d.unplaced_after_secs) {
            return Err(invalid("dialer.unplaced_after_secs", "must be 1–3600"));
        }
        if d.max_live_calls_per_tenant == Some(0) {
            return Err(invalid(
                "dialer.max_live_calls_per_tenant",
                "must be at least 1 (leave it out for no cap)",
            ));
        }
        Ok(())
    }

    fn validate_exotel(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        let e = &self.exotel;
        let set = [
            e.account_sid.is_some(),
            e.api_key.is_some(),
            e.api_token.is_some(),
        ];
        if set.contains(&true) && set.contains(&false) {
            return Err(invalid(
                "exotel.account_sid",
                "account_sid, api_key and api_token go together (EXOTEL_ACCOUNT_SID, \
                 EXOTEL_API_KEY, EXOTEL_API_TOKEN)"
                    .into(),
            ));
        }
        if let Some(sid) = &e.account_sid
            && (sid.is_empty()
                || sid.len() > 128
                || !sid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(invalid(
                "exotel.account_sid",
                format!("{sid:?} is not an account SID (letters, digits, - and _)"),
            ));
        }
        for (key, value) in [
            ("exotel.api_key", &e.api_key),
            ("exotel.api_token", &e.api_token),
        ] {
            if let Some(value) = value
                && (value.is_empty() || value.chars().any(|c| c.is_control() || c == ':'))
            {
                return Err(invalid(
                    key,
                    "is empty or has a colon or a control character".into(),
                ));
            }
        }
        if !reqwest::Url::parse(&e.base_url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        {
            return Err(invalid(
                "exotel.base_url",
                format!("{:?} is not an http(s) URL", e.base_url),
            ));
        }
        if let Some(id) = &e.caller_id {
            let digits = id.strip_prefix('+').unwrap_or(id);
            if !((7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())) {
                return Err(invalid(
                    "exotel.caller_id",
                    format!("{id:?} is not a phone number"),
                ));
            }
        }
        if !(100..=30_000).contains(&e.request_timeout_ms) {
            return Err(invalid(
                "exotel.request_timeout_ms",
                "must be 100–30000 ms".into(),
            ));
        }
        if !(1..=5).contains(&e.max_attempts) {
            return Err(invalid("exotel.max_attempts", "must be 1–5".into()));
        }
        if e.retry_budget_ms > 5_000 {
            return Err(invalid(
                "exotel.retry_budget_ms",
                "must be at most 5000 ms".into(),
            ));
        }
        Ok(())
    }

    /// Checks `[twilio]`.
    fn validate_twilio(&self) -> Result<(), ConfigError> {
        use crate::carrier::twilio_api::{is_e164, is_sid};
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        let t = &self.twilio;
        if let Some(sid) = &t.account_sid {
            if !is_sid("AC", sid) {
                return Err(invalid(
                    "twilio.account_sid",
                    format!("{sid:?} is not an account SID (AC followed by 32 hex digits)"),
                ));
            }
            if self.auth.twilio_auth_token.is_none() {
                return Err(invalid(
                    "twilio.account_sid",
                    "needs the account's auth token in auth.twilio_auth_token \
                     (TWILIO_AUTH_TOKEN)"
                        .into(),
                ));
            }
        }
        if let Some(token) = &self.auth.twilio_auth_token
            && token.chars().any(|c| c.is_control() || c == ':')
        {
            return Err(invalid(
                "auth.twilio_auth_token",
                "has characters an auth token never has (a colon or a control character)".into(),
            ));
        }
        match reqwest::Url::parse(&t.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {}
            _ => {
                return Err(invalid(
                    "twilio.base_url",
                    format!("{:?} is not an http(s) URL", t.base_url),
                ));
            }
        }
        if let Some(id) = &t.caller_id
            && !is_e164(id)
        {
            return Err(invalid(
                "twilio.caller_id",
                format!("{id:?} is not an E.164 number (+ and 7 to 15 digits)"),
            ));
        }
        if !(100..=30_000).contains(&t.request_timeout_ms) {
            return Err(invalid(
                "twilio.request_timeout_ms",
                "must be 100–30000 ms".into(),
            ));
        }
        if !(1..=5).contains(&t.max_attempts) {
            return Err(invalid("twilio.max_attempts", "must be 1–5".into()));
        }
        if t.retry_budget_ms > 5_000 {
            return Err(invalid(
                "twilio.retry_budget_ms",
                "must be at most 5000 ms".into(),
            ));
        }
        Ok(())
    }

    /// Checks `[script]`, and that a script named as the agent exists.
    fn validate_script(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        let s = &self.script;
        if s.dir.as_os_str().is_empty() {
            return Err(invalid("script.dir", "must name a folder"));
        }
        if s.cache_dir.as_os_str().is_empty() {
            return Err(invalid("script.cache_dir", "must name a folder"));
        }
        if s.voice.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(invalid(
                "script.voice",
                "is empty; leave it out to use each script's @voice",
            ));
        }
        if let Some(name) = s
            .variables
            .keys()
            .find(|n| !crate::script::flow::is_variable_name(n))
        {
            return Err(invalid(
                "script.variables",
                format!(
                    "{name:?} is not a variable name (letters, digits, `_` and `.`, starting with a letter or `_`)"
                ),
            ));
        }
        let named = [
            ("script.default", s.default.as_deref()),
            (
                "agent",
                self.agent
                    .as_deref()
                    .and_then(|a| a.strip_prefix("script:")),
            ),
        ];
        for (key, name) in named {
            let Some(name) = name else {
                continue;
            };
            if !is_script_name(name) {
                return Err(invalid(
                    key,
                    format!(
                        "{name:?} is not a script name (a file stem: letters, digits, `_`, `-`)"
                    ),
                ));
            }
            if !s.dir.is_dir() {
                return Err(invalid(
                    key,
                    format!(
                        "names script {name:?} but the scripts folder {} does not exist (set script.dir)",
                        s.dir.display()
                    ),
                ));
            }
            let file = s.file(name);
            if !file.is_file() {
                return Err(invalid(
                    key,
                    format!("no script {} for {name:?}", file.display()),
                ));
            }
        }
        Ok(())
    }

    /// The VAD configuration the audio module takes, from [`Config::vad`] and [`Config::turn`].
    pub fn vad_config(&self) -> Result<VadConfig, ConfigError> {
        let backend: VadBackend = self.vad.backend.parse().map_err(|_| ConfigError::Invalid {
            key: "vad.backend",
            message: format!(
                "unknown backend {:?}: use `webrtc` or `earshot`",
                self.vad.backend
            ),
        })?;
        if self.vad.webrtc_mode > 3 {
            return Err(ConfigError::Invalid {
                key: "vad.webrtc_mode",
                message: "must be 0–3".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.vad.earshot_threshold) {
            return Err(ConfigError::Invalid {
                key: "vad.earshot_threshold",
                message: "must be 0–1".into(),
            });
        }
        if !(-120.0..=0.0).contains(&self.vad.energy_floor_dbfs) {
            return Err(ConfigError::Invalid {
                key: "vad.energy_floor_dbfs",
                message: "must be -120–0 dBFS".into(),
            });
        }
        Ok(VadConfig {
            backend,
            webrtc_mode: self.vad.webrtc_mode,
            earshot_threshold: self.vad.earshot_threshold,
            energy_floor_dbfs: self.vad.energy_floor_dbfs,
            min_speech_ms: self.turn.min_speech_ms,
            min_silence_ms: self.turn.end_of_turn_silence_ms,
        })
    }

    /// Grace period for live calls after SIGTERM.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_values_and_overrides_apply_in_order() {
        let text = r#"
            agent = "echo"
            listen = "127.0.0.1:9000"
            [turn]
            barge_in_min_ms = 160
            [limits]
            bad_frame_limit = 5
        "#;
        let mut config = Config::from_toml_str(text).unwrap();
        assert_eq!(config.turn.barge_in_min_ms, 160);
        assert_eq!(
            config.turn.end_of_turn_silence_ms, 600,
            "unset keys keep defaults"
        );
        assert_eq!(config.limits.bad_frame_limit, 5);
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(&path, text).unwrap();
        config = Config::load(
            Some(&path),
            &Overrides {
                listen: Some("0.0.0.0:7000".parse().unwrap()),
                twilio_auth_token: Some("tok".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(config.turn.barge_in_min_ms, 160);
        assert_eq!(config.auth.twilio_auth_token.as_deref(), Some("tok"));
        assert!(
            !format!("{config:?}").contains("tok\""),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn the_example_file_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/voicegw.example.toml");
        let config = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml_str("[turn]\nbarge_in_ms = 100\n").unwrap_err();
        assert!(err.contains("barge_in_ms"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let mut config = Config::default();
        config.turn.barge_in_min_ms = 5;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("turn.barge_in_min_ms"), "{err}");

        let mut config = Config::default();
        config.vad.backend = "silero".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("vad.backend") && err.contains("silero"),
            "{err}"
        );

        let mut config = Config::default();
        config.auth.exotel_credentials = Some("no-colon".into());
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("auth.exotel_credentials")
        );

        let mut config = Config::default();
        config.auth.public_url = Some("gw.example.com".into());
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("auth.public_url")
        );

        let mut config = Config::default();
        config.egress.max_lead_ms = 50;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("egress.max_lead_ms")
        );
    }

    #[test]
    fn the_default_agent_follows_script_default_then_llm_then_offline_script() {
        let mut config = Config::default();
        assert_eq!(config.agent_name(), "script:appointment_confirmation");
        assert!(config.offline_default());
        config.llm.api_key = "sk".into();
        assert_eq!(config.agent_name(), "llm");
        assert!(!config.offline_default());
        config.script.default = Some("survey".into());
        assert_eq!(config.agent_name(), "script:survey");
        config.agent = Some("echo".into());
        assert_eq!(config.agent_name(), "echo");
    }

    #[test]
    fn script_settings_parse_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("survey.dsc"), "[start]\n-> END\n").unwrap();
        let text = format!(
            "[script]\ndir = {:?}\ncache_dir = \"/tmp/pc\"\ndefault = \"survey\"\nvoice = \"aura-2-luna-en\"\n[script.variables]\ntenantName = \"Acme\"\n\"contact.city\" = \"Oslo\"\n",
            dir.path().display().to_string()
        );
        let config = Config::from_toml_str(&text).unwrap();
        assert_eq!(config.script.dir, dir.path());
        assert_eq!(config.script.cache_dir, Path::new("/tmp/pc"));
        assert_eq!(config.script.variables["tenantName"], "Acme");
        assert_eq!(config.script.voice.as_deref(), Some("aura-2-luna-en"));
        config.validate().unwrap();
        assert_eq!(config.agent_name(), "script:survey");

        let check = |edit: &dyn Fn(&mut Config)| {
            let mut bad = config.clone();
            edit(&mut bad);
            bad.validate().unwrap_err().to_string()
        };
        let err = check(&|c| c.script.default = Some("nope".into()));
        assert!(
            err.contains("script.default") && err.contains("nope.dsc"),
            "{err}"
        );
        let err = check(&|c| c.script.default = Some("../etc/passwd".into()));
        assert!(err.contains("not a script name"), "{err}");
        let err = check(&|c| c.script.dir = dir.path().join("missing"));
        assert!(
            err.contains("script.default") && err.contains("does not exist"),
            "{err}"
        );
        let err = check(&|c| {
            c.script.default = None;
            c.agent = Some("script:other".into());
        });
        assert!(
            err.contains("`agent`") && err.contains("other.dsc"),
            "{err}"
        );
        let err = check(&|c| {
            c.script.variables.insert("1st".into(), "x".into());
        });
        assert!(
            err.contains("script.variables") && err.contains("1st"),
            "{err}"
        );
        let err = check(&|c| c.script.voice = Some(" ".into()));
        assert!(err.contains("script.voice"), "{err}");
        let err = check(&|c| c.script.cache_dir = PathBuf::new());
        assert!(err.contains("script.cache_dir"), "{err}");

        // No named script: the folder need not exist.
        let mut unnamed = Config::default();
        unnamed.script.dir = dir.path().join("missing");
        unnamed.validate().unwrap();
    }

    #[test]
    fn twilio_rest_needs_an_account_and_the_stream_token() {
        let sid = "AC0123456789abcdef0123456789abcdef";
        let config = Config::default();
        assert!(config.twilio_rest().is_none(), "off by default");
        let err = Config::load(
            None,
            &Overrides {
                twilio_account_sid: Some(sid.into()),
                ..Overrides::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("twilio.account_sid") && err.contains("TWILIO_AUTH_TOKEN"),
            "{err}"
        );
        let config = Config::load(
            None,
            &Overrides {
                twilio_account_sid: Some(sid.into()),
                twilio_auth_token: Some("tok3n".into()),
                twilio_base_url: Some("http://127.0.0.1:9/".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        let rest = config.twilio_rest().unwrap();
        assert_eq!(rest.account_sid, sid);
        assert_eq!(
            rest.auth_token, "tok3n",
            "the stream signing token, not a copy"
        );
        assert_eq!(rest.base_url, "http://127.0.0.1:9");
        assert_eq!(rest.retry.max_attempts, 3);
        assert_eq!(rest.request_timeout, Duration::from_secs(5));
        assert!(!format!("{rest:?}").contains("tok3n"));
    }

    #[test]
    fn exotel_rest_comes_from_the_exotel_variables() {
        assert!(Config::default().exotel_rest().is_none(), "off by default");
        let err = Config::load(
            None,
            &Overrides {
                exotel_account_sid: Some("acme1".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("exotel.account_sid") && err.contains("EXOTEL_API_TOKEN"),
            "{err}"
        );
        let config = Config::load(
            None,
            &Overrides {
                exotel_account_sid: Some("acme1".into()),
                exotel_api_key: Some("key".into()),
                exotel_api_token: Some("t0ken".into()),
                exotel_base_url: Some("http://127.0.0.1:9/".into()),
                exotel_caller_id: Some("08012345678".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.exotel.caller_id.as_deref(), Some("08012345678"));
        let rest = config.exotel_rest().unwrap();
        assert_eq!(
            (
                rest.account_sid.as_str(),
                rest.api_key.as_str(),
                rest.api_token.as_str()
            ),
            ("acme1", "key", "t0ken")
        );
        assert_eq!(rest.base_url, "http://127.0.0.1:9");
        assert!(!format!("{rest:?}").contains("t0ken"));
        assert!(!format!("{:?}", config.exotel).contains("t0ken"));
        assert_eq!(
            Config::default().exotel.base_url,
            "https://api.exotel.com",
            "the default cluster"
        );
    }

    #[test]
    fn bad_exotel_values_name_their_key() {
        let with = |f: fn(&mut ExotelSettings)| {
            let mut config = Config::default();
            config.exotel.account_sid = Some("acme1".into());
            config.exotel.api_key = Some("key".into());
            config.exotel.api_token = Some("tok".into());
            f(&mut config.exotel);
            config.validate().map_err(|e| e.to_string())
        };
        assert!(with(|_| {}).is_ok());
        type Change = fn(&mut ExotelSettings);
        let cases: [(&str, Change); 7] = [
            ("exotel.account_sid", |e| e.account_sid = Some("a/b".into())),
            ("exotel.api_token", |e| e.api_token = Some("a:b".into())),
            ("exotel.base_url", |e| e.base_url = "api.exotel.com".into()),
            ("exotel.caller_id", |e| {
                e.caller_id = Some("080-1234".into())
            }),
            ("exotel.request_timeout_ms", |e| e.request_timeout_ms = 10),
            ("exotel.max_attempts", |e| e.max_attempts = 9),
            ("exotel.retry_budget_ms", |e| e.retry_budget_ms = 9_000),
        ];
        for (key, change) in cases {
            let err = with(change).unwrap_err();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn bad_twilio_values_name_their_key() {
        let with = |f: &dyn Fn(&mut Config)| {
            let mut config = Config::default();
            config.auth.twilio_auth_token = Some("tok".into());
            config.twilio.account_sid = Some("AC0123456789abcdef0123456789abcdef".into());
            f(&mut config);
            config.validate().map_err(|e| e.to_string())
        };
        assert!(with(&|_| {}).is_ok());
        for (key, change) in [
            (
                "twilio.account_sid",
                &(|c: &mut Config| c.twilio.account_sid = Some("ACxyz".into()))
                    as &dyn Fn(&mut Config),
            ),
            ("twilio.base_url", &|c: &mut Config| {
                c.twilio.base_url = "api.twilio.com".into()
            }),
            ("twilio.caller_id", &|c: &mut Config| {
                c.twilio.caller_id = Some("415-555-0100".into())
            }),
            ("twilio.request_timeout_ms", &|c: &mut Config| {
                c.twilio.request_timeout_ms = 50
            }),
            ("twilio.max_attempts", &|c: &mut Config| {
                c.twilio.max_attempts = 0
            }),
            ("twilio.retry_budget_ms", &|c: &mut Config| {
                c.twilio.retry_budget_ms = 60_000
            }),
            ("auth.twilio_auth_token", &|c: &mut Config| {
                c.auth.twilio_auth_token = Some("a:b".into())
            }),
        ] {
            let err = with(change).unwrap_err();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn dialer_lookup_periods_parse_and_are_checked() {
        let config =
            Config::from_toml_str("[dialer]\nstale_after_secs = 20\nunplaced_after_secs = 5\n")
                .unwrap();
        assert_eq!(
            (
                config.dialer.stale_after_secs,
                config.dialer.unplaced_after_secs
            ),
            (20, 5)
        );
        config.validate().unwrap();
        let check = |text: &str| {
            Config::from_toml_str(text)
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        let err = check("[dialer]\nstale_after_secs = 0\n").unwrap_err();
        assert!(err.contains("dialer.stale_after_secs"), "{err}");
        let err = check("[dialer]\nunplaced_after_secs = 7200\n").unwrap_err();
        assert!(err.contains("dialer.unplaced_after_secs"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = Config::load(
            Some(Path::new("/nonexistent/voicegw.toml")),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/voicegw.toml"), "{err}");
    }
}
