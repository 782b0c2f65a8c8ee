//! OpenAI speech (`POST /v1/audio/speech`) as a streaming text-to-speech provider.
//!
//! Each segment is one request with `response_format: "pcm"`: the body streams raw 24 kHz
//! 16-bit little-endian mono as it is generated, which [`PcmConverter`] resamples to the call's
//! rate chunk by chunk. One `reqwest::Client` (one connection pool) serves every call, so
//! segments after the first reuse a warm TLS connection. Cancel drops the request. Inputs
//! longer than the API's 4096 characters are split at whitespace into several requests.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::convert::PcmConverter;
use super::{SynthesisStats, TtsError, TtsProvider, TtsVoice};
use crate::audio::Encoding;
use crate::metrics::Metrics;

/// Provider name in errors and events.
const PROVIDER: &str = "openai";
/// Provider label in the `provider_calls` metric.
const METRIC: &str = "openai_tts";
/// The rate of `response_format: "pcm"`.
const PCM_RATE: u32 = 24_000;
/// The API's limit on `input`, in characters.
pub const MAX_INPUT_CHARS: usize = 4096;
/// Longest provider error text kept in an error value.
const MAX_REASON: usize = 300;

/// OpenAI speech settings (`[tts.openai]`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiSpeechConfig {
    /// API base including `/v1` (`https://api.openai.com/v1`).
    pub base_url: String,
    /// Bearer key.
    pub api_key: String,
    /// Model (`gpt-4o-mini-tts`, `tts-1`, `tts-1-hd`).
    pub model: String,
    /// Voice (`alloy`, `coral`, …).
    pub voice: String,
    /// Speaking style instructions (`gpt-4o-mini-tts` only).
    pub instructions: Option<String>,
    /// Speed, 0.25–4.0.
    pub speed: Option<f32>,
    /// Longest wait for the first audio of a segment (and between later body chunks).
    pub first_byte_timeout_ms: u64,
}

impl Default for OpenAiSpeechConfig {
    fn default() -> Self {
        OpenAiSpeechConfig {
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key: String::new(),
            model: "gpt-4o-mini-tts".to_owned(),
            voice: "alloy".to_owned(),
            instructions: None,
            speed: None,
            first_byte_timeout_ms: 2000,
        }
    }
}

impl std::fmt::Debug for OpenAiSpeechConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiSpeechConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &crate::config::redacted(&self.api_key))
            .field("model", &self.model)
            .field("voice", &self.voice)
            .field("instructions", &self.instructions)
            .field("speed", &self.speed)
            .field("first_byte_timeout_ms", &self.first_byte_timeout_ms)
            .finish()
    }
}

impl OpenAiSpeechConfig {
    /// Checks every field; the error names the field and the allowed values.
    pub fn validate(&self) -> Result<(), TtsError> {
        let bad = |msg: String| Err(TtsError::Config(format!("tts.openai: {msg}")));
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {}
            _ => {
                return bad(format!(
                    "base_url {:?} is not an http(s) URL",
                    self.base_url
                ));
            }
        }
        if self.api_key.trim().is_empty() {
            return bad("api_key is empty".into());
        }
        if reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.api_key)).is_err() {
            return bad("api_key has characters not allowed in a header".into());
        }
        if self.model.trim().is_empty() {
            return bad("model is empty".into());
        }
        if self.voice.trim().is_empty() {
            return bad("voice is empty".into());
        }
        if let Some(speed) = self.speed
            && !(0.25..=4.0).contains(&speed)
        {
            return bad(format!("speed {speed} is outside 0.25–4.0"));
        }
        if !(1..=60_000).contains(&self.first_byte_timeout_ms) {
            return bad(format!(
                "first_byte_timeout_ms {} is outside 1–60000",
                self.first_byte_timeout_ms
            ));
        }
        Ok(())
    }
}

/// The JSON body of one request.
#[derive(Debug, Serialize)]
struct SpeechRequest<'a> {
    model: &'a str,
    input: &'a str,
    voice: &'a str,
    response_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speed: Option<f32>,
}

/// What every voice shares.
struct Shared {
    config: OpenAiSpeechConfig,
    /// `{base}/audio/speech`.
    url: String,
    http: reqwest::Client,
    metrics: Metrics,
}

impl Shared {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.first_byte_timeout_ms)
    }

    fn timed_out(&self) -> TtsError {
        TtsError::Timeout {
            provider: PROVIDER,
            waited_ms: self.config.first_byte_timeout_ms,
        }
    }
}

/// The OpenAI speech text-to-speech provider.
#[derive(Clone)]
pub struct OpenAiSpeechTts {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OpenAiSpeechTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiSpeechTts")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl OpenAiSpeechTts {
    /// A provider for `config` (validated here), counting outcomes in `metrics`.
    pub fn new(config: OpenAiSpeechConfig, metrics: Metrics) -> Result<OpenAiSpeechTts, TtsError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| TtsError::Config(format!("openai speech: HTTP client: {e}")))?;
        let url = format!("{}/audio/speech", config.base_url.trim_end_matches('/'));
        Ok(OpenAiSpeechTts {
            shared: Arc::new(Shared {
                config,
                url,
                http,
                metrics,
            }),
        })
    }

    /// A voice producing PCM at `sample_rate` (8, 16, 24 or 48 kHz).
    pub fn openai_voice(&self, sample_rate: u32) -> OpenAiSpeechVoice {
        let converter = PcmConverter::new(Encoding::Linear16, PCM_RATE, sample_rate)
            .map_err(|e| TtsError::Config(format!("openai speech: call rate: {e}")));
        OpenAiSpeechVoice {
            shared: self.shared.clone(),
            converter,
        }
    }
}

impl TtsProvider for OpenAiSpeechTts {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn voice(&self, sample_rate: u32) -> Box<dyn TtsVoice> {
        Box::new(self.openai_voice(sample_rate))
    }
}

/// One call's OpenAI speech voice.
pub struct OpenAiSpeechVoice {
    shared: Arc<Shared>,
    /// 24 kHz PCM → call PCM, or why the call rate cannot be served.
    converter: Result<PcmConverter, TtsError>,
}

impl std::fmt::Debug for OpenAiSpeechVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiSpeechVoice")
            .field("converter", &self.converter)
            .finish()
    }
}

fn transport(reason: impl Into<String>) -> TtsError {
    TtsError::Transport {
        provider: PROVIDER,
        reason: reason.into(),
    }
}

fn clip(s: &str) -> String {
    super::clip(s, MAX_REASON)
}

/// The error for a non-2xx answer: OpenAI's `error.message` (and `code`), else the body.
fn status_error(status: u16, body: &str) -> TtsError {
    let parsed = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let err = v.get("error")?;
            let message = err.get("message")?.as_str()?.to_owned();
            Some(match err.get("code").and_then(|c| c.as_str()) {
                Some(code) => format!("{message} ({code})"),
                None => message,
            })
        });
    let detail = parsed.unwrap_or_else(|| body.trim().to_owned());
    TtsError::Refused {
        provider: PROVIDER,
        reason: format!("HTTP {status}: {}", clip(&detail)),
    }
}

/// Splits `text` into pieces of at most `max` characters, at whitespace where possible.
fn split_input(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((cut, _)) = rest.char_indices().nth(max) else {
            pieces.push(rest);
            break;
        };
        let at = rest[..cut]
            .rfind(char::is_whitespace)
            .filter(|&i| i > 0)
            .unwrap_or(cut);
        pieces.push(rest[..at].trim_end());
        rest = rest[at..].trim_start();
    }
    pieces
}

/// How a request ended early.
enum Stop {
    Cancelled,
    Failed(TtsError),
}

/// Sends PCM to the reader unless cancelled; a gone reader also stops the segment.
async fn deliver(
    out: &mpsc::Sender<Vec<i16>>,
    pcm: Vec<i16>,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    if pcm.is_empty() {
        return Ok(());
    }
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Stop::Cancelled),
        r = out.send(pcm) => r.map_err(|_| Stop::Cancelled),
    }
}

/// One request: streams its audio to `out` through `converter`.
async fn speak_piece(
    shared: &Shared,
    input: &str,
    converter: &mut PcmConverter,
    out: &mpsc::Sender<Vec<i16>>,
    cancel: &CancellationToken,
    started: Instant,
    stats: &mut SynthesisStats,
) -> Result<(), Stop> {
    let cfg = &shared.config;
    let body = SpeechRequest {
        model: &cfg.model,
        input,
        voice: &cfg.voice,
        response_format: "pcm",
        instructions: cfg.instructions.as_deref(),
        speed: cfg.speed,
    };
    let deadline = Instant::now() + shared.timeout();
    let request = shared
        .http
        .post(&shared.url)
        .bearer_auth(&cfg.api_key)
        .json(&body)
        .send();
    let response = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(Stop::Cancelled),
        r = tokio::time::timeout_at(deadline, request) => match r {
            Err(_) => return Err(Stop::Failed(shared.timed_out())),
            Ok(Err(e)) => return Err(Stop::Failed(transport(format!("POST audio/speech: {e}")))),
            Ok(Ok(resp)) => resp,
        },
    };
    let status = response.status();
    if !status.is_success() {
        let text = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            r = tokio::time::timeout(shared.timeout(), response.text()) => {
                r.ok().and_then(Result::ok).unwrap_or_default()
            }
        };
        return Err(Stop::Failed(status_error(status.as_u16(), &text)));
    }
    let mut body = response.bytes_stream();
    let mut pcm = Vec::new();
    let mut got_audio = false;
    loop {
        let until = if got_audio {
            Instant::now() + shared.timeout()
        } else {
            deadline
        };
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            r = tokio::time::timeout_at(until, body.next()) => r,
        };
        match next {
            Err(_) => return Err(Stop::Failed(shared.timed_out())),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Stop::Failed(transport(format!("reading audio: {e}"))));
            }
            Ok(Some(Ok(bytes))) => {
                if bytes.is_empty() {
                    continue;
                }
                got_audio = true;
                if stats.first_byte.is_none() {
                    stats.first_byte = Some(started.elapsed());
                }
                converter.push(&bytes, &mut pcm);
                stats.samples += pcm.len() as u64;
                deliver(out, std::mem::take(&mut pcm), cancel).await?;
            }
        }
    }
    if !got_audio {
        return Err(Stop::Failed(TtsError::Protocol {
            provider: PROVIDER,
            reason: "the response had no audio".into(),
        }));
    }
    converter.finish(&mut pcm);
    stats.samples += pcm.len() as u64;
    deliver(out, pcm, cancel).await
}

#[async_trait::async_trait]
impl TtsVoice for OpenAiSpeechVoice {
    async fn synthesize(
        &mut self,
        text: &str,
        out: &mpsc::Sender<Vec<i16>>,
        cancel: &CancellationToken,
    ) -> Result<SynthesisStats, TtsError> {
        let converter = match self.converter.as_mut() {
            Ok(c) => c,
            Err(e) => return Err(e.clone()),
        };
        let mut stats = SynthesisStats::default();
        let started = Instant::now();
        let mut result = Ok(());
        for piece in split_input(text, MAX_INPUT_CHARS) {
            result = speak_piece(
                &self.shared,
                piece,
                converter,
                out,
                cancel,
                started,
                &mut stats,
            )
            .await;
            if result.is_err() {
                break;
            }
        }
        match result {
            Ok(()) => {
                if stats.samples > 0 {
                    self.shared.metrics.provider(METRIC, "ok");
                }
                Ok(stats)
            }
            Err(Stop::Cancelled) => {
                converter.reset();
                self.shared.metrics.provider(METRIC, "cancelled");
                stats.cancelled = true;
                Ok(stats)
            }
            Err(Stop::Failed(e)) => {
                converter.reset();
                self.shared.metrics.provider(METRIC, "error");
                tracing::warn!(error = %e, "openai speech segment failed");
                Err(e)
            }
        }
    }

    async fn close(&mut self) {
        // Nothing per call: requests end with their segment; the pool is shared.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OpenAiSpeechConfig {
        OpenAiSpeechConfig {
            api_key: "sk-test".into(),
            ..OpenAiSpeechConfig::default()
        }
    }

    #[test]
    fn validation() {
        assert!(OpenAiSpeechConfig::default().validate().is_err());
        assert!(config().validate().is_ok());
        for bad in [
            OpenAiSpeechConfig {
                speed: Some(5.0),
                ..config()
            },
            OpenAiSpeechConfig {
                voice: " ".into(),
                ..config()
            },
            OpenAiSpeechConfig {
                base_url: "api.openai.com".into(),
                ..config()
            },
            OpenAiSpeechConfig {
                first_byte_timeout_ms: 0,
                ..config()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let c: OpenAiSpeechConfig = toml::from_str("api_key = \"k\"\nspeed = 1.2").unwrap();
        assert_eq!(c.voice, "alloy");
        assert!(toml::from_str::<OpenAiSpeechConfig>("format = \"mp3\"").is_err());
        assert!(!format!("{c:?}").contains("\"k\""));
    }

    #[test]
    fn request_body_skips_unset_options() {
        let body = SpeechRequest {
            model: "tts-1",
            input: "hi",
            voice: "alloy",
            response_format: "pcm",
            instructions: None,
            speed: None,
        };
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model":"tts-1","input":"hi","voice":"alloy","response_format":"pcm"})
        );
    }

    #[test]
    fn errors_carry_openai_message() {
        let e = status_error(
            429,
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        );
        assert!(
            matches!(&e, TtsError::Refused { reason, .. } if reason.contains("429") && reason.contains("Rate limit reached")),
            "{e:?}"
        );
        let e = status_error(502, "<html>bad gateway</html>");
        assert!(matches!(&e, TtsError::Refused { reason, .. } if reason.contains("bad gateway")));
    }

    #[test]
    fn long_input_is_split_at_whitespace() {
        assert_eq!(split_input("  hello  ", 10), ["hello"]);
        assert!(split_input("   ", 10).is_empty());
        let text = "aaaa bbbb cccc dddd";
        let pieces = split_input(text, 10);
        assert_eq!(pieces, ["aaaa bbbb", "cccc dddd"]);
        let long = "x".repeat(25);
        let pieces = split_input(&long, 10);
        assert_eq!(
            pieces.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        let words = "word ".repeat(2000);
        for p in split_input(&words, MAX_INPUT_CHARS) {
            assert!(p.chars().count() <= MAX_INPUT_CHARS);
        }
    }
}
