//! Builds the conversation pipeline from the config: the recognizer, the language model, the
//! synthesizer and the tools; registers the `llm` agent and one `script:<name>` agent per
//! script of the scripts folder; checks provider keys at start-up so a missing or refused key
//! stops the gateway instead of failing the first call.
//!
//! Scripts speak with the configured synthesizer (voice: `[script] voice`, else the script's
//! `@voice`, else the provider's), their static prompts loaded from the prompt cache and any
//! missing ones synthesized in the background at start-up. With no synthesizer key they speak
//! with the recorded prompts of `[script] recorded_prompts`. A script that hands calls to the
//! language model is not served when none is configured (a warning names it; start-up fails
//! if it was explicitly chosen as the default agent).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::call::agent::{Agent, AgentCatalog, AgentError};
use crate::call::conversation::{ConversationAgent, ConversationDeps};
use crate::call::reply::FallbackAudio;
use crate::carrier::StreamStart;
use crate::config::{Config, TtsSettings};
use crate::llm::openai::OpenAiChat;
use crate::llm::prompt::PromptTemplate;
use crate::llm::tools::Toolbox;
use crate::metrics::Metrics;
use crate::script::cache::PromptCache;
use crate::script::fixture_voice::FixtureVoice;
use crate::script::loader::{LoadError, LoadOptions, Loaded, ScriptVoice, load_script};
use crate::script::loader::{read_script, script_files};
use crate::script::prompts::LoadedScript;
use crate::script::spoken::llm_nodes;
use crate::script::{Key, Trigger};
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
    /// A script cannot be loaded (its errors as `file:line:col: message`).
    #[error(transparent)]
    Script(#[from] LoadError),
    /// The default agent is a script that needs the language model, and none is configured.
    #[error(
        "agent `{agent}` hands calls to the language model (nodes: {nodes}) and none is configured: set OPENAI_API_KEY (or OPENAI_BASE_URL), or choose another agent"
    )]
    ScriptNeedsModel {
        /// The agent, `script:<name>`.
        agent: String,
        /// The nodes that need the model.
        nodes: String,
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
    /// The scripts served, as agents `script:<name>`.
    pub scripts: Vec<Arc<LoadedScript>>,
    /// How scripts stored by tenants are loaded (the configured voice and prompt cache).
    tenant_scripts: Option<Arc<TenantScriptLoading>>,
}

/// What loading a tenant's script (from the database) needs: the folder's load options and
/// the configured voice.
struct TenantScriptLoading {
    options: LoadOptions,
    voice: ScriptVoice,
    config: Config,
}

/// Why a tenant's script could not be loaded for calls.
#[derive(Debug, thiserror::Error)]
pub enum TenantScriptError {
    /// No voice to speak it with (no text-to-speech key and no recorded prompts).
    #[error("scripts cannot be served: no text-to-speech key and no recorded prompts")]
    NoVoice,
    /// The source does not parse, or its prompts cannot be set up.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The flow hands calls to the language model and none is configured.
    #[error("the script hands calls to the language model ({nodes}) and none is configured")]
    NeedsModel {
        /// The nodes that do.
        nodes: String,
    },
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("agents", &self.agents)
            .field("stt", &self.stt.as_ref().map(|s| s.name()))
            .field("scripts", &self.scripts)
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
        let mut default = config.agent_name();
        let llm_configured = config.llm_configured();
        let mut pipeline = Pipeline {
            agents: agents.clone(),
            stt: None,
            deepgram_stt: None,
            chat: None,
            tts: None,
            fallback: None,
            scripts: Vec::new(),
            tenant_scripts: None,
        };
        let mut conversation = None;
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
            let tts = build_tts(&config.tts, metrics)?;
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
            conversation = Some(deps.clone());
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
        pipeline.tenant_scripts =
            Self::tenant_script_loading(config, metrics, conversation.clone());
        for loaded in Self::load_scripts(config, metrics, conversation)? {
            let agent = format!("script:{}", loaded.script.name);
            let model_nodes = llm_nodes(&loaded.script.flow);
            if !model_nodes.is_empty() && loaded.script.conversation.is_none() {
                let nodes = model_nodes.join(", ");
                if agent == default && !config.offline_default() {
                    return Err(PipelineError::ScriptNeedsModel { agent, nodes });
                }
                tracing::warn!(
                    %agent,
                    %nodes,
                    "script not served: it hands calls to the language model and none is configured (set OPENAI_API_KEY)"
                );
                continue;
            }
            if pipeline.stt.is_none() && listens_for_words(&loaded) {
                tracing::warn!(
                    %agent,
                    "the script listens for words but no speech-to-text is configured (DEEPGRAM_API_KEY): callers can only press keys"
                );
            }
            Self::complete_prompts(&agent, &loaded, config);
            if pipeline.tts.is_none()
                && let ScriptVoice::Synth { .. } = loaded.voice
            {
                // The configured synthesizer, for the start-up key check.
                pipeline.tts = Some(build_tts(&config.tts, metrics)?);
            }
            let script = Arc::new(loaded.script);
            tracing::info!(%agent, hash = %script.hash, voice = %loaded.voice.key(), "script loaded");
            register_script(&mut agents, &agent, script.clone());
            pipeline.scripts.push(script);
        }
        if config.offline_default() && !agents.names().contains(&default) {
            tracing::warn!(
                agent = %default,
                "no provider key and the offline script is not available: serving `echo`"
            );
            default = "echo".to_owned();
        }
        agents.set_default(&default)?;
        pipeline.agents = agents;
        Ok(pipeline)
    }

    /// The load options and voice for tenants' scripts: recorded prompts when no synthesizer
    /// is configured, else the configured voice; `None` when neither is available.
    fn tenant_script_loading(
        config: &Config,
        metrics: &Metrics,
        conversation: Option<Arc<ConversationDeps>>,
    ) -> Option<Arc<TenantScriptLoading>> {
        let voice = if tts_configured(config) {
            match script_synth(config, metrics, chosen_voice(config, None).as_deref()) {
                Ok(Some(voice)) => voice,
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%error, "tenant scripts not served: the voice cannot be set up");
                    return None;
                }
            }
        } else {
            match FixtureVoice::load(&config.script.recorded_prompts) {
                Ok(recorded) => ScriptVoice::Recorded(recorded),
                Err(error) => {
                    tracing::debug!(%error, "tenant scripts: no recorded prompts");
                    return None;
                }
            }
        };
        let options = load_options(config, conversation);
        Some(Arc::new(TenantScriptLoading {
            options,
            voice,
            config: config.clone(),
        }))
    }

    /// Loads a tenant's script `name` from its `source` for calls, with the configured voice
    /// (missing prompts are synthesized in the background, as for the scripts folder).
    pub fn load_tenant_script(
        &self,
        name: &str,
        source: &str,
    ) -> Result<Arc<LoadedScript>, TenantScriptError> {
        let loading = self
            .tenant_scripts
            .as_ref()
            .ok_or(TenantScriptError::NoVoice)?;
        let path = std::path::PathBuf::from(format!("{name}.dsc"));
        let parsed =
            crate::script::parse::parse(source).map_err(|diagnostics| LoadError::Parse {
                path: path.clone(),
                diagnostics,
            })?;
        let hash = crate::script::print::script_hash(&parsed.flow);
        let file = crate::script::loader::ScriptFile {
            path,
            name: name.to_owned(),
            parsed,
            hash,
        };
        let loaded = load_script(file, loading.voice.clone(), &loading.options)?;
        let model_nodes = llm_nodes(&loaded.script.flow);
        if !model_nodes.is_empty() && loaded.script.conversation.is_none() {
            return Err(TenantScriptError::NeedsModel {
                nodes: model_nodes.join(", "),
            });
        }
        Self::complete_prompts(&format!("script:{name}"), &loaded, &loading.config);
        Ok(Arc::new(loaded.script))
    }

    /// Parses every script of `[script] dir` and loads its prompt audio with its voice.
    fn load_scripts(
        config: &Config,
        metrics: &Metrics,
        conversation: Option<Arc<ConversationDeps>>,
    ) -> Result<Vec<Loaded>, PipelineError> {
        let dir = &config.script.dir;
        if !dir.is_dir() {
            tracing::debug!(dir = %dir.display(), "no scripts folder");
            return Ok(Vec::new());
        }
        let files = script_files(dir)?;
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let options = load_options(config, conversation);
        let recorded = if tts_configured(config) {
            None
        } else {
            match FixtureVoice::load(&config.script.recorded_prompts) {
                Ok(recorded) => Some(recorded),
                Err(error) => {
                    tracing::warn!(
                        %error,
                        "scripts not served: no text-to-speech key, and no recorded prompts"
                    );
                    return Ok(Vec::new());
                }
            }
        };
        let mut voices: HashMap<Option<String>, ScriptVoice> = HashMap::new();
        let mut loaded = Vec::with_capacity(files.len());
        for path in files {
            let file = read_script(&path)?;
            for warning in file.warnings() {
                tracing::warn!("{warning}");
            }
            let voice = match &recorded {
                Some(recorded) => ScriptVoice::Recorded(recorded.clone()),
                None => {
                    let wanted = chosen_voice(config, file.parsed.flow.settings.voice.as_deref());
                    match voices.get(&wanted) {
                        Some(voice) => voice.clone(),
                        None => {
                            let voice = script_synth(config, metrics, wanted.as_deref())
                                .map_err(|e| LoadError::Voice {
                                    path: path.clone(),
                                    message: e.to_string(),
                                })?
                                .ok_or_else(|| LoadError::Voice {
                                    path: path.clone(),
                                    message: "no text-to-speech key".to_owned(),
                                })?;
                            voices.insert(wanted, voice.clone());
                            voice
                        }
                    }
                }
            };
            loaded.push(load_script(file, voice, &options)?);
        }
        Ok(loaded)
    }

    /// Synthesizes a loaded script's missing static prompts in the background, or says why
    /// they stay missing.
    fn complete_prompts(agent: &str, loaded: &Loaded, config: &Config) {
        if loaded.missing.is_empty() {
            return;
        }
        let missing = loaded.missing.len();
        if let ScriptVoice::Recorded(_) = loaded.voice {
            tracing::warn!(
                %agent,
                missing,
                recordings = %config.script.recorded_prompts.display(),
                "prompts with no recording: calls that reach them end with the goodbye"
            );
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%agent, missing, "prompts not in the cache and not synthesized now (no runtime)");
            return;
        };
        tracing::info!(
            %agent,
            missing,
            "synthesizing prompts missing from the cache in the background (`voicegw script prime` does it ahead of time)"
        );
        let prompts = loaded.prompts.clone();
        let agent = agent.to_owned();
        runtime.spawn(async move {
            let report = prompts.fill_missing().await;
            if report.failed.is_empty() {
                tracing::info!(%agent, synthesized = report.synthesized, "prompts cached");
            } else {
                for (text, error) in &report.failed {
                    tracing::warn!(%agent, %error, text = %crate::tts::clip(text, 60), "prompt not synthesized");
                }
            }
        });
    }
}

/// Registers `script` as agent `agent`.
fn register_script(agents: &mut AgentCatalog, agent: &str, script: Arc<LoadedScript>) {
    agents.register(agent, crate::script::script_agent_factory(script));
}

/// Whether a script matches spoken words somewhere (a quoted key or `any`).
fn listens_for_words(loaded: &Loaded) -> bool {
    loaded.script.flow.nodes.iter().any(|node| {
        node.transitions.iter().any(|t| match &t.trigger {
            Trigger::Any => true,
            Trigger::Keys { keys } => keys.iter().any(|k| matches!(k, Key::Phrase(_))),
            _ => false,
        })
    })
}

/// The voice a script speaks with: `[script] voice`, else the script's own `@voice`.
pub fn chosen_voice(config: &Config, script_voice: Option<&str>) -> Option<String> {
    config
        .script
        .voice
        .clone()
        .or_else(|| script_voice.map(str::to_owned))
}

/// Whether the configured text-to-speech provider has its key.
pub fn tts_configured(config: &Config) -> bool {
    let tts = &config.tts;
    match tts.provider.as_str() {
        "deepgram" => !tts.deepgram.api_key.is_empty(),
        "elevenlabs" => !tts.elevenlabs.api_key.is_empty(),
        "openai" => !tts.openai.api_key.is_empty(),
        _ => false,
    }
}

/// The configured synthesizer set to `voice` (the provider's own voice when `None`), with the
/// voice's prompt cache key (`deepgram/<model>`, `elevenlabs/<voice_id>/<model_id>`,
/// `openai/<model>/<voice>`); `None` when no synthesizer key is configured.
pub fn script_synth(
    config: &Config,
    metrics: &Metrics,
    voice: Option<&str>,
) -> Result<Option<ScriptVoice>, PipelineError> {
    if !tts_configured(config) {
        return Ok(None);
    }
    let mut settings = config.tts.clone();
    if let Some(voice) = voice {
        match settings.provider.as_str() {
            "deepgram" => voice.clone_into(&mut settings.deepgram.model),
            "elevenlabs" => voice.clone_into(&mut settings.elevenlabs.voice_id),
            _ => voice.clone_into(&mut settings.openai.voice),
        }
    }
    let key = match settings.provider.as_str() {
        "deepgram" => format!("deepgram/{}", settings.deepgram.model),
        "elevenlabs" => format!(
            "elevenlabs/{}/{}",
            settings.elevenlabs.voice_id, settings.elevenlabs.model_id
        ),
        _ => format!("openai/{}/{}", settings.openai.model, settings.openai.voice),
    };
    let provider = build_tts(&settings, metrics)?.provider();
    Ok(Some(ScriptVoice::Synth { provider, key }))
}

/// The synthesizer `tts` chooses; a missing key is an error naming what to set.
fn build_tts(tts: &TtsSettings, metrics: &Metrics) -> Result<TtsClient, PipelineError> {
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

impl Pipeline {
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

/// How scripts load under `config`: its prompt cache, its default variables, and the model
/// conversation where one is configured.
fn load_options(config: &Config, conversation: Option<Arc<ConversationDeps>>) -> LoadOptions {
    LoadOptions {
        cache: PromptCache::new(&config.script.cache_dir),
        defaults: config
            .script
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        conversation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new().expect("metrics")
    }

    /// The defaults, with no scripts folder.
    fn no_scripts() -> Config {
        let mut config = Config::default();
        config.script.dir = std::path::PathBuf::from("/nonexistent/scripts");
        config
    }

    fn repo(path: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    /// The shipped appointment script's opening, key presses only (the texts are recorded).
    const OFFLINE: &str = r#"@goodbye Sorry, I couldn't understand. We'll send you a text instead. Goodbye.
[start]
Hi {{ firstName | there }}, this is Destiny calling from {{ tenantName }}.
Are you still able to make your appointment on {{ appointmentDate }}?
Press 1 or say yes to confirm, press 2 or say no to reschedule.
reprompt: Sorry, I didn't catch that. Press 1 to confirm or 2 to reschedule.
-> 1: confirmed
-> 2: see_you

[confirmed]
Wonderful, you're all set. Would you like a text with the details? Press 1 or say yes.
-> 1: see_you
-> timeout 4s: see_you

[see_you]
No problem. We'll see you then. Goodbye!
-> END
"#;

    fn scripts_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[tokio::test]
    async fn no_keys_and_no_scripts_means_echo_only() {
        let pipeline = Pipeline::build(&no_scripts(), &metrics()).unwrap();
        assert_eq!(pipeline.agents.default_name(), "echo");
        assert_eq!(pipeline.agents.names(), vec!["echo".to_string()]);
        assert!(pipeline.stt.is_none());
        assert!(pipeline.scripts.is_empty());
    }

    #[tokio::test]
    async fn no_keys_serve_the_offline_script_with_its_recorded_prompts() {
        let dir = scripts_dir(&[(&format!("{}.dsc", crate::config::OFFLINE_SCRIPT), OFFLINE)]);
        let mut config = Config::default();
        config.script.dir = dir.path().to_path_buf();
        config.script.recorded_prompts = repo("fixtures/audio/prompts");
        config.script.cache_dir = dir.path().join("cache");
        let pipeline = Pipeline::build(&config, &metrics()).unwrap();
        assert_eq!(
            pipeline.agents.default_name(),
            "script:appointment_confirmation"
        );
        let script = &pipeline.scripts[0];
        assert_eq!(script.defaults["tenantName"], "Acme Dental");
        for text in [
            "Sorry, I didn't catch that. Press 1 to confirm or 2 to reschedule.",
            "No problem. We'll see you then. Goodbye!",
        ] {
            assert!(script.prompts.cached(text).is_some(), "{text}");
        }
        let first = "Hi there, this is Destiny calling from Acme Dental. Are you still able to make your appointment on Tuesday at 3 PM? Press 1 or say yes to confirm, press 2 or say no to reschedule.";
        assert!(script.prompts.synthesize(first).await.is_ok());
        assert!(
            !dir.path().join("cache").exists(),
            "recordings are not copied"
        );
        // `--agent echo` still gives echo, with the script available.
        config.agent = Some("echo".into());
        let pipeline = Pipeline::build(&config, &metrics()).unwrap();
        assert_eq!(pipeline.agents.default_name(), "echo");
        assert!(
            pipeline
                .agents
                .names()
                .contains(&"script:appointment_confirmation".to_string())
        );
    }

    #[tokio::test]
    async fn scripts_that_need_the_model_are_not_served_without_one() {
        let needs_model = "[start]\nHello.\n-> 0: agent\n-> 1: END\n";
        let dir = scripts_dir(&[("helper.dsc", needs_model), ("plain.dsc", OFFLINE)]);
        let mut config = no_scripts();
        config.script.dir = dir.path().to_path_buf();
        config.script.recorded_prompts = repo("fixtures/audio/prompts");
        let pipeline = Pipeline::build(&config, &metrics()).unwrap();
        let names = pipeline.agents.names();
        assert!(names.contains(&"script:plain".to_string()), "{names:?}");
        assert!(!names.contains(&"script:helper".to_string()), "{names:?}");

        config.script.default = Some("helper".into());
        let err = Pipeline::build(&config, &metrics())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("script:helper")
                && err.contains("start")
                && err.contains("OPENAI_API_KEY"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_broken_script_stops_start_up_with_file_line_and_column() {
        let dir = scripts_dir(&[("broken.dsc", "[start]\nHi.\n-> confirmd\n")]);
        let mut config = no_scripts();
        config.script.dir = dir.path().to_path_buf();
        let err = Pipeline::build(&config, &metrics())
            .unwrap_err()
            .to_string();
        let at = format!(
            "{}:3:4: unknown node `confirmd`",
            dir.path().join("broken.dsc").display()
        );
        assert!(err.contains(&at), "{err}");
    }

    #[tokio::test]
    async fn with_a_synthesizer_key_scripts_load_the_cache_in_their_voice() {
        let dir = scripts_dir(&[(
            "plain.dsc",
            &OFFLINE.replace("@goodbye", "@voice aura-2-luna-en\n@goodbye"),
        )]);
        let mut config = no_scripts();
        config.script.dir = dir.path().to_path_buf();
        config.script.cache_dir = dir.path().join("cache");
        config.tts.deepgram.api_key = "dg".into();
        config.tts.deepgram.base_url = "http://127.0.0.1:9".into();
        let cache = PromptCache::new(&config.script.cache_dir);
        let text = "No problem. We'll see you then. Goodbye!";
        cache
            .write_clip("deepgram/aura-2-luna-en", text, &[5; 160])
            .unwrap();
        let pipeline = Pipeline::build(&config, &metrics()).unwrap();
        let script = &pipeline.scripts[0];
        assert_eq!(script.prompts.cached(text).map(|c| c.len()), Some(160));
        assert!(
            script.defaults.is_empty(),
            "no demo variables with a real voice"
        );
        assert!(pipeline.tts.is_some(), "the key is checked at start-up");

        // `[script] voice` overrides the script's @voice: another set of clips.
        config.script.voice = Some("aura-2-thalia-en".into());
        let pipeline = Pipeline::build(&config, &metrics()).unwrap();
        assert!(pipeline.scripts[0].prompts.cached(text).is_none());
    }

    #[tokio::test]
    async fn both_keys_make_llm_the_default_with_deepgram_both_ways() {
        let mut config = no_scripts();
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
        let mut config = no_scripts();
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
            ..no_scripts()
        };
        let err = Pipeline::build(&config, &metrics())
            .unwrap_err()
            .to_string();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
    }

    #[tokio::test]
    async fn a_bad_prompt_template_names_line_and_column() {
        let mut config = no_scripts();
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
