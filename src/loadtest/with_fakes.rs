//! Provider fakes in this process and a local gateway pointed at them.
//!
//! `voicegw loadtest --with-fakes` starts the Deepgram listen, Deepgram Aura and OpenAI chat
//! fakes ([`crate::fakes`]) on 127.0.0.1 with fixed delays, writes a gateway config that points
//! at them, and runs `voicegw serve` as a child process. What the run then measures above the
//! fakes' delays is the gateway's own overhead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::config::Config;
use crate::fakes::deepgram_listen::{FakeListen, ListenConfig};
use crate::fakes::deepgram_speak::{FakeDeepgramSpeak, FakeSpeakConfig};
use crate::fakes::openai_chat::{ChatFake, ChatFakeConfig, Reply};

use super::carrier::CarrierKind;
use super::results::FakeDelays;

/// What the speech-to-text fake hears in every caller utterance.
pub const FAKE_TRANSCRIPT: &str = "Can you tell me what time you open tomorrow?";

/// What the chat fake answers every time: two short sentences.
pub const FAKE_ANSWER: &str = "We open at eight tomorrow. See you then!";

/// Transcripts queued per call of the speech-to-text fake, more than any run's turns.
const SCRIPT_LEN: usize = 2_000;

/// How long the gateway may take to answer `/healthz` after it was started.
const START_LIMIT: Duration = Duration::from_secs(20);

/// How long the gateway may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// Variables of the caller's environment that would change the local gateway's config.
const CLEARED_ENV: &[&str] = &[
    "VOICEGW_CONFIG",
    "VOICEGW_LISTEN",
    "VOICEGW_AGENT",
    "VOICEGW_TTS_PROVIDER",
    "VOICEGW_LOG_FORMAT",
    "VOICEGW_PUBLIC_URL",
    "VOICEGW_EXOTEL_CREDENTIALS",
    "VOICEGW_ADMIN_KEY",
    "VOICEGW_DATABASE_URL",
    "VOICEGW_REDIS_URL",
    "DEEPGRAM_BASE_URL",
    "OPENAI_MODEL",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_BASE_URL",
    "EXOTEL_ACCOUNT_SID",
    "EXOTEL_API_KEY",
    "EXOTEL_API_TOKEN",
    "EXOTEL_BASE_URL",
    "EXOTEL_CALLER_ID",
    "ELEVENLABS_API_KEY",
    "ELEVENLABS_BASE_URL",
];

/// Why the fakes or the local gateway could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WithFakesError {
    /// A fake could not bind its loopback port.
    #[error("cannot start the {which} fake: {source}")]
    Fake {
        /// Which fake.
        which: &'static str,
        /// The bind error.
        source: std::io::Error,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The extra gateway config is not valid TOML, or the merged one cannot be written.
    #[error("gateway config {path}: {detail}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The gateway binary could not be started.
    #[error("cannot run the gateway {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The gateway exited before it answered `/healthz`.
    #[error("the gateway exited during start-up ({status}); its log {log} ends with:\n{tail}")]
    Exited {
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// The gateway did not answer `/healthz` in time.
    #[error("the gateway did not answer /healthz within {secs} s; see its log {log}")]
    NotHealthy {
        /// The limit, seconds.
        secs: u64,
        /// Its log file.
        log: PathBuf,
    },
}

/// The provider fakes of one run, in this process.
pub struct FakeProviders {
    /// Deepgram live speech-to-text.
    pub listen: FakeListen,
    /// Deepgram Aura text-to-speech.
    pub speak: FakeDeepgramSpeak,
    /// OpenAI-compatible chat.
    pub chat: ChatFake,
    /// Their delays.
    pub delays: FakeDelays,
}

impl std::fmt::Debug for FakeProviders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProviders")
            .field("listen", &self.listen.base_url())
            .field("speak", &self.speak.base_url())
            .field("chat", &self.chat.base_url())
            .field("delays", &self.delays)
            .finish()
    }
}

impl FakeProviders {
    /// The delays `voicegw loadtest` uses unless told otherwise: endpointing 300 ms, first
    /// token 200 ms (+2 ms per token), first audio byte 120 ms.
    pub const DEFAULT_DELAYS: FakeDelays = FakeDelays {
        stt_endpointing_ms: 300,
        llm_first_token_ms: 200,
        llm_token_ms: 2,
        tts_first_byte_ms: 120,
    };

    /// Starts the three fakes on 127.0.0.1 with `delays`. The speech-to-text fake transcribes
    /// every utterance as [`FAKE_TRANSCRIPT`] and finalizes after the endpointing the gateway
    /// asks for (the gateway config sets it to `delays.stt_endpointing_ms`); the chat fake
    /// answers [`FAKE_ANSWER`].
    pub async fn start(delays: FakeDelays) -> Result<FakeProviders, WithFakesError> {
        let listen = FakeListen::start(ListenConfig {
            default_script: vec![FAKE_TRANSCRIPT.to_owned(); SCRIPT_LEN],
            ..ListenConfig::default()
        })
        .await
        .map_err(|source| WithFakesError::Fake {
            which: "speech-to-text",
            source,
        })?;
        let speak = FakeDeepgramSpeak::start_with(FakeSpeakConfig {
            first_byte_delay_ms: delays.tts_first_byte_ms,
            ..FakeSpeakConfig::default()
        })
        .await
        .map_err(|source| WithFakesError::Fake {
            which: "text-to-speech",
            source,
        })?;
        let chat = ChatFake::start(ChatFakeConfig {
            first_token_delay_ms: delays.llm_first_token_ms,
            token_delay_ms: delays.llm_token_ms,
            rules: Vec::new(),
            default_reply: Reply::Text(FAKE_ANSWER.to_owned()),
            ..ChatFakeConfig::default()
        })
        .await
        .map_err(|source| WithFakesError::Fake {
            which: "chat",
            source,
        })?;
        Ok(FakeProviders {
            listen,
            speak,
            chat,
            delays,
        })
    }

    /// The Deepgram key both Deepgram fakes accept.
    pub fn deepgram_key(&self) -> String {
        ListenConfig::default().api_key
    }

    /// The endpoints and keys a gateway (or a persona) needs to use these fakes.
    pub fn endpoints(&self) -> FakeEndpoints {
        FakeEndpoints {
            deepgram_key: self.deepgram_key(),
            listen_url: self.listen.base_url(),
            speak_url: self.speak.base_url(),
            chat_key: self.chat.api_key().to_owned(),
            chat_url: self.chat.base_url(),
        }
    }

    /// A config whose speech-to-text, language model and text-to-speech are these fakes
    /// (what personas use in a `--with-fakes` run).
    pub fn persona_config(&self) -> Config {
        let endpoints = self.endpoints();
        let mut config = Config::default();
        config.stt.deepgram.api_key = endpoints.deepgram_key.clone();
        config.stt.deepgram.base_url = endpoints.listen_url;
        config.stt.deepgram.endpointing_ms =
            u32::try_from(self.delays.stt_endpointing_ms).unwrap_or(u32::MAX);
        config.tts.deepgram.api_key = endpoints.deepgram_key;
        config.tts.deepgram.base_url = endpoints.speak_url;
        config.llm.api_key = endpoints.chat_key;
        config.llm.base_url = endpoints.chat_url;
        config
    }

    /// One line per fake: what it served during the run.
    pub fn served(&self) -> String {
        let connections = self.listen.connections();
        format!(
            "fakes: STT {} connections ({} refused); TTS {} sockets, {} texts; LLM {} requests",
            connections.len(),
            self.listen.rejections().len(),
            self.speak.ws_connections(),
            self.speak.spoken_texts().len(),
            self.chat.request_count(),
        )
    }
}

/// Where the fakes listen and the keys they accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeEndpoints {
    /// The key both Deepgram fakes accept.
    pub deepgram_key: String,
    /// The speech-to-text fake's base URL.
    pub listen_url: String,
    /// The text-to-speech fake's base URL.
    pub speak_url: String,
    /// The key the chat fake accepts.
    pub chat_key: String,
    /// The chat fake's base URL.
    pub chat_url: String,
}

/// The local gateway's config file (TOML). Greeting off unless `greeting` is given; the
/// recognizer's endpointing is the fakes' `stt_endpointing_ms`; its store (SQLite) and event
/// spool live in `dir`. Keys and the chat URL go in the environment ([`gateway_env`]).
pub fn gateway_toml(
    listen: SocketAddr,
    endpoints: &FakeEndpoints,
    delays: &FakeDelays,
    greeting: Option<&str>,
    dir: &Path,
) -> String {
    let mut table = toml::Table::new();
    table.insert("listen".into(), toml::Value::String(listen.to_string()));
    table.insert("shutdown_grace_secs".into(), toml::Value::Integer(2));
    let mut store = toml::Table::new();
    store.insert(
        "url".into(),
        toml::Value::String(format!("sqlite://{}", dir.join("gateway.db").display())),
    );
    store.insert(
        "spool_path".into(),
        toml::Value::String(dir.join("events.spool").display().to_string()),
    );
    table.insert("store".into(), toml::Value::Table(store));
    let mut conversation = toml::Table::new();
    conversation.insert(
        "greeting".into(),
        toml::Value::String(greeting.unwrap_or("").to_owned()),
    );
    table.insert("conversation".into(), toml::Value::Table(conversation));
    let mut stt_deepgram = toml::Table::new();
    stt_deepgram.insert(
        "base_url".into(),
        toml::Value::String(endpoints.listen_url.clone()),
    );
    stt_deepgram.insert(
        "endpointing_ms".into(),
        toml::Value::Integer(i64::try_from(delays.stt_endpointing_ms).unwrap_or(i64::MAX)),
    );
    let mut stt = toml::Table::new();
    stt.insert("deepgram".into(), toml::Value::Table(stt_deepgram));
    table.insert("stt".into(), toml::Value::Table(stt));
    let mut tts_deepgram = toml::Table::new();
    tts_deepgram.insert(
        "base_url".into(),
        toml::Value::String(endpoints.speak_url.clone()),
    );
    let mut tts = toml::Table::new();
    tts.insert("deepgram".into(), toml::Value::Table(tts_deepgram));
    table.insert("tts".into(), toml::Value::Table(tts));
    table.to_string()
}

/// Merges `extra` into `base`: tables merge key by key, anything else in `extra` replaces.
pub fn merge_toml(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => merge_toml(into, from),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The local gateway's environment: the fakes' keys and the chat fake's URL.
pub fn gateway_env(endpoints: &FakeEndpoints) -> Vec<(&'static str, String)> {
    vec![
        ("DEEPGRAM_API_KEY", endpoints.deepgram_key.clone()),
        ("OPENAI_API_KEY", endpoints.chat_key.clone()),
        ("OPENAI_BASE_URL", endpoints.chat_url.clone()),
    ]
}

/// Warnings and errors in a gateway's JSON log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCounts {
    /// Lines at WARN.
    pub warnings: u64,
    /// Lines at ERROR.
    pub errors: u64,
    /// Non-empty lines that are not JSON log entries.
    pub other: u64,
}

/// Counts the WARN and ERROR lines of a JSON log (`--log-format json`).
pub fn count_log(log: &str) -> LogCounts {
    let mut counts = LogCounts::default();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let level = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|entry| {
                entry
                    .get("level")
                    .and_then(|l| l.as_str().map(str::to_owned))
            });
        match level.as_deref() {
            Some("WARN") => counts.warnings += 1,
            Some("ERROR") => counts.errors += 1,
            Some(_) => {}
            None => counts.other += 1,
        }
    }
    counts
}

/// How to start the local gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The `voicegw` binary to run.
    pub bin: PathBuf,
    /// Where its config and log go.
    pub dir: PathBuf,
    /// Its greeting (none by default: the caller speaks first).
    pub greeting: Option<String>,
    /// Extra TOML merged over the generated config.
    pub extra_config: Option<PathBuf>,
}

/// `voicegw serve` in a child process, pointed at the fakes.
#[derive(Debug)]
pub struct LocalGateway {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
}

impl LocalGateway {
    /// Writes the config, starts the gateway and waits until it answers `/healthz`.
    pub async fn start(
        fakes: &FakeProviders,
        options: &GatewayOptions,
    ) -> Result<LocalGateway, WithFakesError> {
        let addr = free_port().map_err(|source| WithFakesError::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })?;
        let endpoints = fakes.endpoints();
        let mut text = gateway_toml(
            addr,
            &endpoints,
            &fakes.delays,
            options.greeting.as_deref(),
            &options.dir,
        );
        if let Some(extra) = &options.extra_config {
            text = merged_config(&text, extra)?;
        }
        let config_path = options.dir.join("gateway.toml");
        write_file(&config_path, &text)?;
        let log = options.dir.join("gateway.log");
        let log_file = std::fs::File::create(&log).map_err(|source| WithFakesError::Io {
            path: log.clone(),
            source,
        })?;
        let log_err = log_file.try_clone().map_err(|source| WithFakesError::Io {
            path: log.clone(),
            source,
        })?;
        let mut command = tokio::process::Command::new(&options.bin);
        command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config_path)
            .envs(gateway_env(&endpoints))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        for key in CLEARED_ENV {
            command.env_remove(key);
        }
        let mut child = command.spawn().map_err(|source| WithFakesError::Spawn {
            bin: options.bin.clone(),
            source,
        })?;
        let Some(pid) = child.id() else {
            return Err(exited(&mut child, &log).await);
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .map_err(|e| WithFakesError::Spawn {
                bin: options.bin.clone(),
                source: std::io::Error::other(e),
            })?;
        let health = format!("http://{addr}/healthz");
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return Err(exited(&mut child, &log).await);
            }
            let healthy = client
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                return Ok(LocalGateway {
                    child,
                    pid,
                    addr,
                    log,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(WithFakesError::NotHealthy {
                    secs: START_LIMIT.as_secs(),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The media-stream URL for `carrier` (Exotel with its `sample-rate`).
    pub fn stream_url(&self, carrier: CarrierKind) -> String {
        stream_url(self.addr, carrier)
    }

    /// Sends SIGTERM, waits for the exit (kills it after 15 s) and returns its log.
    pub async fn stop(mut self) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if tokio::time::timeout(STOP_LIMIT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The stream URL of a gateway at `addr` for `carrier`.
pub fn stream_url(addr: SocketAddr, carrier: CarrierKind) -> String {
    match carrier {
        CarrierKind::Twilio => format!("ws://{addr}/stream/twilio"),
        CarrierKind::Exotel { sample_rate } => {
            format!("ws://{addr}/stream/exotel?sample-rate={sample_rate}")
        }
    }
}

/// The generated config with the file `extra` merged over it.
fn merged_config(generated: &str, extra: &Path) -> Result<String, WithFakesError> {
    let extra_text = std::fs::read_to_string(extra).map_err(|source| WithFakesError::Io {
        path: extra.to_path_buf(),
        source,
    })?;
    let extra_table: toml::Table =
        toml::from_str(&extra_text).map_err(|e| WithFakesError::Config {
            path: extra.to_path_buf(),
            detail: e.to_string(),
        })?;
    let mut table: toml::Table = toml::from_str(generated).map_err(|e| WithFakesError::Config {
        path: PathBuf::from("gateway.toml"),
        detail: e.to_string(),
    })?;
    merge_toml(&mut table, extra_table);
    Ok(table.to_string())
}

fn write_file(path: &Path, text: &str) -> Result<(), WithFakesError> {
    std::fs::write(path, text).map_err(|source| WithFakesError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A free loopback port (bound, read, released).
fn free_port() -> std::io::Result<SocketAddr> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0")?;
    socket.local_addr()
}

/// The error for a gateway that exited during start-up, with the end of its log.
async fn exited(child: &mut tokio::process::Child, log: &Path) -> WithFakesError {
    let status = match child.wait().await {
        Ok(status) => status.to_string(),
        Err(e) => e.to_string(),
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    WithFakesError::Exited {
        status,
        log: log.to_path_buf(),
        tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> FakeEndpoints {
        FakeEndpoints {
            deepgram_key: "dg".into(),
            listen_url: "http://127.0.0.1:1001".into(),
            speak_url: "http://127.0.0.1:1002".into(),
            chat_key: "sk".into(),
            chat_url: "http://127.0.0.1:1003".into(),
        }
    }

    #[test]
    fn gateway_config_points_at_the_fakes() {
        let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let dir = Path::new("/run/lt");
        let text = gateway_toml(
            addr,
            &endpoints(),
            &FakeProviders::DEFAULT_DELAYS,
            None,
            dir,
        );
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["listen"].as_str(), Some("127.0.0.1:9000"));
        assert_eq!(
            table["store"]["url"].as_str(),
            Some("sqlite:///run/lt/gateway.db")
        );
        assert_eq!(
            table["store"]["spool_path"].as_str(),
            Some("/run/lt/events.spool")
        );
        assert_eq!(table["conversation"]["greeting"].as_str(), Some(""));
        assert_eq!(
            table["stt"]["deepgram"]["base_url"].as_str(),
            Some("http://127.0.0.1:1001")
        );
        assert_eq!(
            table["stt"]["deepgram"]["endpointing_ms"].as_integer(),
            Some(300)
        );
        assert_eq!(
            table["tts"]["deepgram"]["base_url"].as_str(),
            Some("http://127.0.0.1:1002")
        );
        let with_greeting = gateway_toml(
            addr,
            &endpoints(),
            &FakeProviders::DEFAULT_DELAYS,
            Some("Hello"),
            dir,
        );
        let table: toml::Table = toml::from_str(&with_greeting).unwrap();
        assert_eq!(table["conversation"]["greeting"].as_str(), Some("Hello"));
    }

    #[test]
    fn the_generated_config_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        std::fs::write(
            &path,
            gateway_toml(
                addr,
                &endpoints(),
                &FakeProviders::DEFAULT_DELAYS,
                None,
                dir.path(),
            ),
        )
        .unwrap();
        let config = Config::load(Some(&path), &crate::config::Overrides::default()).unwrap();
        assert_eq!(
            config.store.url,
            format!("sqlite://{}", dir.path().join("gateway.db").display())
        );
        assert_eq!(config.listen, addr);
        assert_eq!(config.stt.deepgram.endpointing_ms, 300);
        assert_eq!(config.tts.deepgram.base_url, "http://127.0.0.1:1002");
    }

    #[test]
    fn env_carries_keys_and_chat_url() {
        assert_eq!(
            gateway_env(&endpoints()),
            vec![
                ("DEEPGRAM_API_KEY", "dg".to_owned()),
                ("OPENAI_API_KEY", "sk".to_owned()),
                ("OPENAI_BASE_URL", "http://127.0.0.1:1003".to_owned()),
            ]
        );
    }

    #[test]
    fn merge_keeps_and_overrides() {
        let mut base: toml::Table =
            toml::from_str("a = 1\n[t]\nx = 1\ny = 2\n[u]\nz = 3\n").unwrap();
        let extra: toml::Table = toml::from_str("a = 5\n[t]\ny = 9\nw = 4\n[v]\nq = 1\n").unwrap();
        merge_toml(&mut base, extra);
        let expected: toml::Table =
            toml::from_str("a = 5\n[t]\nx = 1\ny = 9\nw = 4\n[u]\nz = 3\n[v]\nq = 1\n").unwrap();
        assert_eq!(base, expected);
    }

    #[test]
    fn merged_config_reports_bad_toml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extra.toml");
        std::fs::write(&path, "[turn\n").unwrap();
        let err = merged_config("a = 1\n", &path).unwrap_err();
        assert!(matches!(err, WithFakesError::Config { .. }), "{err}");
        std::fs::write(&path, "[turn]\nspeculate_after_ms = 0\n").unwrap();
        let text = merged_config("a = 1\n", &path).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["turn"]["speculate_after_ms"].as_integer(), Some(0));
        assert_eq!(table["a"].as_integer(), Some(1));
    }

    #[test]
    fn log_counts() {
        let log = concat!(
            "{\"level\":\"INFO\",\"fields\":{}}\n",
            "{\"level\":\"WARN\",\"fields\":{}}\n",
            "\n",
            "{\"level\":\"ERROR\",\"fields\":{}}\n",
            "{\"level\":\"WARN\",\"fields\":{}}\n",
            "thread panicked\n",
        );
        assert_eq!(
            count_log(log),
            LogCounts {
                warnings: 2,
                errors: 1,
                other: 1
            }
        );
    }

    #[test]
    fn stream_urls() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            stream_url(addr, CarrierKind::Twilio),
            "ws://127.0.0.1:8080/stream/twilio"
        );
        assert_eq!(
            stream_url(
                addr,
                CarrierKind::Exotel {
                    sample_rate: 16_000
                }
            ),
            "ws://127.0.0.1:8080/stream/exotel?sample-rate=16000"
        );
    }

    #[tokio::test]
    async fn fakes_start_on_loopback() {
        let fakes = FakeProviders::start(FakeProviders::DEFAULT_DELAYS)
            .await
            .unwrap();
        let e = fakes.endpoints();
        for url in [&e.listen_url, &e.speak_url, &e.chat_url] {
            assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        }
        let config = fakes.persona_config();
        assert_eq!(config.llm.base_url, e.chat_url);
        assert_eq!(config.stt.deepgram.base_url, e.listen_url);
        assert_eq!(config.tts.deepgram.base_url, e.speak_url);
        assert_eq!(config.stt.deepgram.endpointing_ms, 300);
    }
}
