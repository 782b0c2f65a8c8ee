//! Builds the conversation pipeline from the config: the recognizer, the language model, the
//! synthesizer and the tools; registers the `llm` agent; checks provider keys at start-up so a
//! missing or refused key stops the gateway instead of failing the first call.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::call::agent::{Agent, AgentCatalog, AgentError};
use crate::call::conversation::{ConversationAgent, ConversationDeps};
use crate::call::reply::FallbackAudio;
use crate::carrier::StreamStart;
use crate::config::Config;
use crate::llm::openai::OpenAiChat;
use crate::llm::prompt::PromptTemplate;
use crate::llm::tools::Toolbox;
use crate::metrics::Metrics;
use crate::stt::SttProvider;
use crate::stt::deepgram::{CredentialError, DeepgramStt};
use crate::tts::deepgram::DeepgramTts;
use crate::tts::elevenlabs::ElevenLabsTts;
use crate::tts::openai::OpenAiSpeechTts;
use crate::tts::{TtsError, TtsProvider};

/// How long each start-up key check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Call rates the fallback line is pre-synthesized at.
const FALLBACK_RATES: [u32; 2] = [8000, 16000];

/// Why the pipeline cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The default agent is unknown.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The `llm` agent lacks a provider.
    #[error("the llm agent needs {what}: {hint}")]
    Missing {
        /// What is missing.
        what: &'static str,
        /// How to provide it.
        hint: &'static str,
    },
    /// A provider's settings are invalid.
    #[error("{section}: {message}")]
    Invalid {
        /// The config section.
        section: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A provider refused its API key at start-up.
    #[error("{provider} refused the API key: {message}")]
    Credentials {
        /// Which provider.
        provider: &'static str,
        /// Its answer.
        message: String,
    },
}

/// The synthesizer chosen in the config, with its concrete client for key checks.
#[derive(Clone)]
enum TtsClient {
    Deepgram(Arc<DeepgramTts>),
    ElevenLabs(Arc<ElevenLabsTts>),
    OpenAi(Arc<OpenAiSpeechTts>),
}

impl TtsClient {
    fn provider(&self) -> Arc<dyn TtsProvider> {
        match self {
            TtsClient::Deepgram(c) => c.clone(),
            TtsClient::ElevenLabs(c) => c.clone(),
            TtsClient::OpenAi(c) => c.clone(),
        }
    }
}

/// The built pipeline: the agent catalog (with `llm` when configured) and the recognizer.
#[derive(Clone)]
pub struct Pipeline {
    /// The agents, with the default resolved.
    pub agents: AgentCatalog,
    /// The recognizer, when configured.
    pub stt: Option<Arc<dyn SttProvider>>,
    deepgram_stt: Option<Arc<DeepgramStt>>,
    chat: Option<Arc<OpenAiChat>>,
    tts: Option<TtsClient>,
    fallback: Option<(Arc<FallbackAudio>, String)>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("agents", &self.agents)
            .field("stt", &self.stt.as_ref().map(|s| s.name()))
            .finish_non_exhaustive()
    }
}

fn invalid(section: &'static str, message: impl ToString) -> PipelineError {
    PipelineError::Invalid {
        section,
        message: message.to_string(),
    }
}

impl Pipeline {
    /// Builds what the config asks for. The `llm` agent is registered when a language model
    /// is configured; if it is the default agent, the recognizer and synthesizer keys are
    /// required too.
    pub fn build(config: &Config, metrics: &Metrics) -> Result<Pipeline, PipelineError> {
        let mut agents = AgentCatalog::builtin("echo")?;
        let default = config.agent_name();
        let llm_configured = config.llm_configured();
        let mut pipeline = Pipeline {
            agents: agents.clone(),
            stt: None,
            deepgram_stt: None,
            chat: None,
            tts: None,
            fallback: None,
        };
        if !config.stt.deepgram.api_key.is_empty() {
            let stt = DeepgramStt::new(config.stt.deepgram.clone(), metrics.clone())
                .map_err(|e| invalid("stt.deepgram", e))?;
            let stt = Arc::new(stt);
            pipeline.stt = Some(stt.clone());
            pipeline.deepgram_stt = Some(stt);
        }
        if llm_configured {
            if pipeline.stt.is_none() {
                return Err(PipelineError::Missing {
                    what: "speech-to-text",
                    hint: "set DEEPGRAM_API_KEY (or stt.deepgram.api_key)",
                });
            }
            let chat = OpenAiChat::new(config.llm.clone(), metrics.clone())
                .map_err(|e| invalid("llm", e))?;
            let chat = Arc::new(chat);
            let tts = Self::build_tts(config, metrics)?;
            let prompt = PromptTemplate::parse(&config.conversation.system_prompt)
                .map_err(|e| invalid("conversation.system_prompt", e))?;
            let greeting = if config.conversation.greeting.trim().is_empty() {
                None
            } else {
                Some(
                    PromptTemplate::parse(&config.conversation.greeting)
                        .map_err(|e| invalid("conversation.greeting", e))?,
                )
            };
            let toolbox = Toolbox::new(config.tools.clone()).map_err(|e| invalid("tools", e))?;
            let fallback_audio = Arc::new(FallbackAudio::default());
            let deps = Arc::new(ConversationDeps {
                config: config.conversation.clone(),
                prompt,
                greeting,
                model: chat.clone(),
                tts: tts.provider(),
                toolbox: Arc::new(toolbox),
                fallback_audio: fallback_audio.clone(),
            });
            agents.register(
                "llm",
                Arc::new(move |_start: &StreamStart| {
                    Ok(Box::new(ConversationAgent::new(deps.clone())) as Box<dyn Agent>)
                }),
            );
            pipeline.chat = Some(chat);
            pipeline.tts = Some(tts);
            pipeline.fallback = Some((fallback_audio, config.conversation.fallback_line.clone()));
        } else if default == "llm" {
            return Err(PipelineError::Missing {
                what: "a language model",
                hint: "set OPENAI_API_KEY (or OPENAI_BASE_URL for a compatible server)",
            });
        }
        agents.set_default(&default)?;
        pipeline.agents = agents;
        Ok(pipeline)
    }

    fn build_tts(config: &Config, metrics: &Metrics) -> Result<TtsClient, PipelineError> {
        let tts = &config.tts;
        match tts.provider.as_str() {
            "deepgram" => {
                if tts.deepgram.api_key.is_empty() {
                    return Err(PipelineError::Missing {
                        what: "text-to-speech",
                        hint: "set DEEPGRAM_API_KEY (Aura), or choose tts.provider",
                    });
                }
                DeepgramTts::new(tts.deepgram.clone(), metrics.clone())
                    .map(|c| TtsClient::Deepgram(Arc::new(c)))
                    .map_err(|e| invalid("tts.deepgram", e))
            }
            "elevenlabs" => {
                if tts.elevenlabs.api_key.is_empty() {
                    return Err(PipelineError::Missing {
                        what: "text-to-speech",
                        hint: "set ELEVENLABS_API_KEY and tts.elevenlabs.voice_id",
                    });
                }
                ElevenLabsTts::new(tts.elevenlabs.clone(), metrics.clone())
                    .map(|c| TtsClient::ElevenLabs(Arc::new(c)))
                    .map_err(|e| invalid("tts.elevenlabs", e))
            }
            "openai" => {
                if tts.openai.api_key.is_empty() {
                    return Err(PipelineError::Missing {
                        what: "text-to-speech",
                        hint: "set OPENAI_API_KEY (or tts.openai.api_key)",
                    });
                }
                OpenAiSpeechTts::new(tts.openai.clone(), metrics.clone())
                    .map(|c| TtsClient::OpenAi(Arc::new(c)))
                    .map_err(|e| invalid("tts.openai", e))
            }
            other => Err(invalid(
                "tts.provider",
                format!("unknown provider {other:?}"),
            )),
        }
    }

    /// Checks every configured key with its provider, all at once. A refused key is an error;
    /// a provider that cannot be reached is only logged (the gateway still serves, and calls
    /// fall back politely until it is back).
    pub async fn check_credentials(&self) -> Result<(), PipelineError> {
        let stt = async {
            let Some(stt) = &self.deepgram_stt else {
                return Ok(());
            };
            match tokio::time::timeout(CHECK_TIMEOUT, stt.check_credentials()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(CredentialError::Rejected { status, message })) => {
                    Err(PipelineError::Credentials {
                        provider: "Deepgram",
                        message: format!("HTTP {status}: {message}"),
                    })
                }
                Ok(Err(other)) => {
                    tracing::warn!(error = %other, "Deepgram key not checked");
                    Ok(())
                }
                Err(_) => {
                    tracing::warn!("Deepgram key check timed out");
                    Ok(())
                }
            }
        };
        let chat = async {
            let Some(chat) = &self.chat else {
                return Ok(());
            };
            match tokio::time::timeout(CHECK_TIMEOUT, chat.check_credentials()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(crate::llm::LlmError::Status {
                    status, message, ..
                })) if status == 401 || status == 403 => Err(PipelineError::Credentials {
                    provider: "the language model",
                    message: format!("HTTP {status}: {message}"),
                }),
                Ok(Err(other)) => {
                    tracing::warn!(error = %other, "language model key not checked");
                    Ok(())
                }
                Err(_) => {
                    tracing::warn!("language model key check timed out");
                    Ok(())
                }
            }
        };
        let tts = async {
            let result = match &self.tts {
                Some(TtsClient::Deepgram(c)) => {
                    tokio::time::timeout(CHECK_TIMEOUT, c.check_credentials()).await
                }
                Some(TtsClient::ElevenLabs(c)) => {
                    tokio::time::timeout(CHECK_TIMEOUT, c.check_credentials()).await
                }
                // OpenAI speech shares the chat key, checked above.
                Some(TtsClient::OpenAi(_)) | None => return Ok(()),
            };
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(TtsError::Refused { provider, reason })) => {
                    Err(PipelineError::Credentials {
                        provider,
                        message: reason,
                    })
                }
                Ok(Err(other)) => {
                    tracing::warn!(error = %other, "text-to-speech key not checked");
                    Ok(())
                }
                Err(_) => {
                    tracing::warn!("text-to-speech key check timed out");
                    Ok(())
                }
            }
        };
        let (stt, chat, tts) = tokio::join!(stt, chat, tts);
        stt?;
        chat?;
        tts?;
        Ok(())
    }

    /// Pre-synthesizes the fallback line in the background (retried on the next start if the
    /// synthesizer is down), so a synthesizer failure mid-call still ends in words.
    pub fn warm_fallback(&self) {
        let (Some(tts), Some((store, line))) = (&self.tts, &self.fallback) else {
            return;
        };
        let provider = tts.provider();
        let store = store.clone();
        let line = line.clone();
        tokio::spawn(async move {
            for rate in FALLBACK_RATES {
                let mut voice = provider.voice(rate);
                let (tx, mut rx) = mpsc::channel(crate::tts::TTS_AUDIO_QUEUE);
                let cancel = CancellationToken::new();
                let collect = async {
                    let mut pcm = Vec::new();
                    while let Some(piece) = rx.recv().await {
                        pcm.extend(piece);
                    }
                    pcm
                };
                let synth = async {
                    let result = voice.synthesize(&line, &tx, &cancel).await;
                    drop(tx);
                    result
                };
                let (result, pcm) = tokio::join!(synth, collect);
                voice.close().await;
                match result {
                    Ok(_) if !pcm.is_empty() => store.put(rate, pcm),
                    Ok(_) => tracing::warn!(rate, "fallback line synthesized to nothing"),
                    Err(error) => {
                        tracing::warn!(%error, rate, "fallback line not pre-synthesized");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new().expect("metrics")
    }

    #[tokio::test]
    async fn no_keys_means_echo_only() {
        let pipeline = Pipeline::build(&Config::default(), &metrics()).unwrap();
        assert_eq!(pipeline.agents.default_name(), "echo");
        assert_eq!(pipeline.agents.names(), vec!["echo".to_string()]);
        assert!(pipeline.stt.is_none());
    }

    #[tokio::test]
    async fn both_keys_make_llm_the_default_with_deepgram_both_ways() {
        let mut config = Config::default();
        config.stt.deepgram.api_key = "dg".into();
        config.tts.deepgram.api_key = "dg".into();
        config.llm.api_key = "sk".into();
        let pipeline = Pipeline::build(&config, &metrics()).unwrap();
        assert_eq!(pipeline.agents.default_name(), "llm");
        assert_eq!(pipeline.stt.as_ref().map(|s| s.name()), Some("deepgram"));
        assert!(matches!(pipeline.tts, Some(TtsClient::Deepgram(_))));
        // `--agent echo` keeps echo the default but llm stays available.
        config.agent = Some("echo".into());
        let pipeline = Pipeline::build(&config, &metrics()).unwrap();
        assert_eq!(pipeline.agents.default_name(), "echo");
        assert!(pipeline.agents.names().contains(&"llm".to_string()));
    }

    #[tokio::test]
    async fn missing_keys_are_clear_start_up_errors() {
        let mut config = Config::default();
        config.llm.api_key = "sk".into();
        let err = Pipeline::build(&config, &metrics())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("speech-to-text") && err.contains("DEEPGRAM_API_KEY"),
            "{err}"
        );

        config.stt.deepgram.api_key = "dg".into();
        config.tts.provider = "elevenlabs".into();
        let err = Pipeline::build(&config, &metrics())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ELEVENLABS_API_KEY"), "{err}");

        let config = Config {
            agent: Some("llm".into()),
            ..Config::default()
        };
        let err = Pipeline::build(&config, &metrics())
            .unwrap_err()
            .to_string();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
    }

    #[tokio::test]
    async fn a_bad_prompt_template_names_line_and_column() {
        let mut config = Config::default();
        config.stt.deepgram.api_key = "dg".into();
        config.tts.deepgram.api_key = "dg".into();
        config.llm.api_key = "sk".into();
        config.conversation.system_prompt = "Hello\nyou are {{ name".into();
        let err = Pipeline::build(&config, &metrics())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("conversation.system_prompt") && err.contains('2'),
            "{err}"
        );
    }
}
