//! Personas: an LLM plays the caller. It hears the bot through speech-to-text, answers in
//! character through the language model and speaks through text-to-speech, so two agents
//! hold a real conversation through the real call path.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clip::{Clip, FRAME_SAMPLES_8K, VOICED_DBFS};
use crate::audio::Encoding;
use crate::audio::linear16::{dbfs, rms};
use crate::call::CallId;
use crate::config::Config;
use crate::llm::openai::OpenAiChat;
use crate::llm::{ChatMessage, ChatModel, ChatRequest, LlmDelta};
use crate::metrics::Metrics;
use crate::script::loader::ScriptVoice;
use crate::stt::deepgram::DeepgramStt;
use crate::stt::{SttAudioFormat, SttEncoding, SttEvent, SttProvider, SttStream};
use crate::tts::{TTS_AUDIO_QUEUE, TtsProvider, TtsVoice};

/// A customer the persona plays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerProfile {
    /// The customer's name.
    pub name: String,
    /// Why they call, in a sentence.
    pub issue: String,
    /// How hard the issue is to resolve, 1 (simple) to 5 (hard).
    pub complexity: u8,
    /// How they feel (`calm`, `annoyed`, `confused` …).
    pub mood: String,
    /// Seconds they wait for the bot to answer before giving up (hanging up).
    pub patience_s: f64,
}

/// The agent side of a pair: sent to the gateway as custom parameters, which its system
/// prompt can use (`{{agent_name}}`, `{{agent_skill}}`, `{{agent_style}}` and any others).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentProfile {
    /// The agent's name.
    pub name: String,
    /// How capable it is, 1 to 5.
    pub skill: u8,
    /// How it speaks (`brief`, `warm` …).
    pub style: String,
    /// More custom parameters for the call.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

/// How customers and agents are paired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairingRule {
    /// Each customer gets the least skilled agent whose skill is at least the issue's
    /// complexity (the most skilled when none is).
    SkillCoversComplexity,
    /// Customers and agents in turn.
    RoundRobin,
}

/// The personas of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonaSet {
    /// Customers, used in turn by the calls.
    pub customers: Vec<CustomerProfile>,
    /// Agents to pair them with.
    pub agents: Vec<AgentProfile>,
    /// The pairing rule.
    pub rule: PairingRule,
}

/// One call's pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaPair {
    /// The caller.
    pub customer: CustomerProfile,
    /// The agent.
    pub agent: AgentProfile,
}

/// What the caller tells its persona.
#[derive(Debug, Clone, PartialEq)]
pub enum PersonaInput {
    /// Bot audio as it plays, 8 kHz PCM.
    BotAudio(Vec<i16>),
    /// The bot has finished speaking (playback drained and quiet for the turn gap).
    BotQuiet,
    /// The call is over.
    CallEnded,
}

/// What the persona tells the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum PersonaOutput {
    /// Say this.
    Say {
        /// The speech, 8 kHz.
        clip: std::sync::Arc<Clip>,
        /// Its text.
        text: String,
    },
    /// Hang up (after saying nothing more).
    HangUp {
        /// Why (patience ran out, goal reached, turns used up).
        reason: String,
    },
}

/// Why personas cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PersonaError {
    /// Any problem, with context.
    #[error("{0}")]
    Invalid(String),
    /// A profiles file cannot be read.
    #[error("{}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A profiles file is not the JSON expected.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// A profile breaks a rule.
    #[error("{}: entry {entry}: {what}", path.display())]
    Profile {
        /// The file.
        path: PathBuf,
        /// The profile's position in the file (1-based).
        entry: usize,
        /// Which rule.
        what: String,
    },
    /// A transcript cannot be written.
    #[error("{}: cannot write: {reason}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A provider of the persona cannot be set up from the config.
    #[error("persona {what}: {reason}")]
    Provider {
        /// Which provider (`speech-to-text`, `language model`, `text-to-speech`).
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// Who spoke a transcript line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// The gateway's agent.
    Bot,
    /// The persona.
    Caller,
}

/// One line of a call's transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptLine {
    /// Seconds since the persona started.
    pub at_s: f64,
    /// Who spoke.
    pub speaker: Speaker,
    /// What was said.
    pub text: String,
}

/// A persona call's transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The call's index.
    pub call: u32,
    /// Who talked.
    pub pair: PersonaPair,
    /// What was said, in order.
    pub lines: Vec<TranscriptLine>,
    /// How the persona's side ended.
    pub ended: String,
}

/// Most profiles one file may hold.
pub const MAX_PROFILES: usize = 10_000;
/// Largest profiles file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Highest complexity and skill level (the lowest is 1).
pub const MAX_LEVEL: u8 = 5;
/// Longest patience, in seconds (the shortest is 1).
pub const MAX_PATIENCE_S: f64 = 600.0;
/// Inputs queued to a persona (the caller uses `try_send`: about 5 s of 20 ms audio).
pub const INPUT_QUEUE: usize = 256;
/// Outputs queued to the caller.
pub const OUTPUT_QUEUE: usize = 8;
/// The word with which the persona ends the call; it is not spoken.
pub const END_MARKER: &str = "GOODBYE";
/// The persona's system prompt; `{name}`, `{issue}`, `{mood}` and `{patience_s}` are filled
/// in from the customer profile.
pub const DEFAULT_PROMPT: &str = "You are {name}, calling about {issue}. You feel {mood}. \
Speak briefly like a person on the phone, one or two sentences. When your issue is resolved \
or you give up, end with the word GOODBYE.";
/// The rate of the audio the persona hears and speaks.
pub const SAMPLE_RATE: u32 = 8000;
/// What the dialogue holds for bot audio the recognizer made no words of.
pub const INAUDIBLE: &str = "[inaudible]";

/// Custom parameter names that carry the agent profile's own fields.
const AGENT_NAME: &str = "agent_name";
const AGENT_SKILL: &str = "agent_skill";
const AGENT_STYLE: &str = "agent_style";

/// How long the end of the session waits for a reply in progress to give its voice back.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

impl PersonaError {
    fn profile(path: &Path, index: usize, what: String) -> PersonaError {
        PersonaError::Profile {
            path: path.to_path_buf(),
            entry: index + 1,
            what,
        }
    }
}

/// Reads customer profiles: a JSON array, 1 to [`MAX_PROFILES`] entries, each with a
/// non-empty name, issue and mood, complexity 1..=5 and patience 1..=600 s.
pub fn load_customers(path: &Path) -> Result<Vec<CustomerProfile>, PersonaError> {
    parse_customers(&read_limited(path)?, path)
}

/// Reads agent profiles: a JSON array, 1 to [`MAX_PROFILES`] entries, each with a non-empty
/// name and style, skill 1..=5, and parameters whose names are non-empty and not one of
/// `agent_name`, `agent_skill`, `agent_style` (those come from the profile itself).
pub fn load_agents(path: &Path) -> Result<Vec<AgentProfile>, PersonaError> {
    parse_agents(&read_limited(path)?, path)
}

/// Parses and checks customer profiles; `path` names the source in errors.
pub fn parse_customers(text: &str, path: &Path) -> Result<Vec<CustomerProfile>, PersonaError> {
    let customers: Vec<CustomerProfile> = parse_array(text, path)?;
    for (index, customer) in customers.iter().enumerate() {
        check_customer(customer).map_err(|what| PersonaError::profile(path, index, what))?;
    }
    Ok(customers)
}

/// Parses and checks agent profiles; `path` names the source in errors.
pub fn parse_agents(text: &str, path: &Path) -> Result<Vec<AgentProfile>, PersonaError> {
    let agents: Vec<AgentProfile> = parse_array(text, path)?;
    for (index, agent) in agents.iter().enumerate() {
        check_agent(agent).map_err(|what| PersonaError::profile(path, index, what))?;
    }
    Ok(agents)
}

fn read_limited(path: &Path) -> Result<String, PersonaError> {
    let read_error = |reason: String| PersonaError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| read_error(e.to_string()))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(read_error(format!(
            "{size} bytes, more than the {MAX_FILE_BYTES} allowed"
        )));
    }
    std::fs::read_to_string(path).map_err(|e| read_error(e.to_string()))
}

fn parse_array<T: DeserializeOwned>(text: &str, path: &Path) -> Result<Vec<T>, PersonaError> {
    let items: Vec<T> = serde_json::from_str(text).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        let full = e.to_string();
        let message = full
            .strip_suffix(&format!(" at line {line} column {column}"))
            .unwrap_or(&full)
            .to_owned();
        PersonaError::Json {
            path: path.to_path_buf(),
            line,
            // serde_json counts 0 before the first character of a line; editors count from 1.
            column: column.max(1),
            message,
        }
    })?;
    if items.is_empty() {
        return Err(PersonaError::Read {
            path: path.to_path_buf(),
            reason: "no profiles (the array is empty)".to_owned(),
        });
    }
    if items.len() > MAX_PROFILES {
        return Err(PersonaError::Read {
            path: path.to_path_buf(),
            reason: format!(
                "{} profiles, more than the {MAX_PROFILES} allowed",
                items.len()
            ),
        });
    }
    Ok(items)
}

fn non_empty(field: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err(format!("{field} is empty"))
    } else {
        Ok(())
    }
}

fn level(field: &str, value: u8) -> Result<(), String> {
    if (1..=MAX_LEVEL).contains(&value) {
        Ok(())
    } else {
        Err(format!("{field} must be 1..={MAX_LEVEL}, not {value}"))
    }
}

fn check_customer(customer: &CustomerProfile) -> Result<(), String> {
    non_empty("name", &customer.name)?;
    non_empty("issue", &customer.issue)?;
    non_empty("mood", &customer.mood)?;
    level("complexity", customer.complexity)?;
    let patience = customer.patience_s;
    if !(patience.is_finite() && (1.0..=MAX_PATIENCE_S).contains(&patience)) {
        return Err(format!(
            "patience_s must be 1..={MAX_PATIENCE_S} seconds, not {patience}"
        ));
    }
    Ok(())
}

fn check_agent(agent: &AgentProfile) -> Result<(), String> {
    non_empty("name", &agent.name)?;
    non_empty("style", &agent.style)?;
    level("skill", agent.skill)?;
    for key in agent.parameters.keys() {
        if key.trim().is_empty() {
            return Err("a parameter has an empty name".to_owned());
        }
        if [AGENT_NAME, AGENT_SKILL, AGENT_STYLE].contains(&key.as_str()) {
            return Err(format!(
                "parameter {key:?} is reserved: it is set from the profile's own field"
            ));
        }
    }
    Ok(())
}

/// Pairs customers with agents for `calls` calls: call `i` gets customer `i % customers`.
///
/// [`PairingRule::SkillCoversComplexity`] gives it the least skilled agent whose skill is at
/// least the issue's complexity, else the most skilled; agents of the same skill take turns
/// (in file order) so the load spreads. [`PairingRule::RoundRobin`] gives call `i` agent
/// `i % agents`. Empty when either list is empty.
pub fn pair(set: &PersonaSet, calls: usize) -> Vec<PersonaPair> {
    if set.customers.is_empty() || set.agents.is_empty() {
        return Vec::new();
    }
    // Agents by skill, each level in file order, with the number of calls it has served.
    let mut by_skill: BTreeMap<u8, (Vec<&AgentProfile>, usize)> = BTreeMap::new();
    for agent in &set.agents {
        by_skill.entry(agent.skill).or_default().0.push(agent);
    }
    let mut pairs = Vec::with_capacity(calls);
    for (i, customer) in set.customers.iter().cycle().take(calls).enumerate() {
        let agent = match set.rule {
            PairingRule::RoundRobin => set.agents.get(i % set.agents.len()),
            PairingRule::SkillCoversComplexity => {
                let level = match by_skill.range(customer.complexity..).next() {
                    Some((skill, _)) => Some(*skill),
                    None => by_skill.keys().next_back().copied(),
                };
                level
                    .and_then(|level| by_skill.get_mut(&level))
                    .and_then(|(equals, served)| {
                        let agent = equals.get(served.checked_rem(equals.len())?).copied();
                        *served += 1;
                        agent
                    })
            }
        };
        if let Some(agent) = agent {
            pairs.push(PersonaPair {
                customer: customer.clone(),
                agent: agent.clone(),
            });
        }
    }
    pairs
}

/// Custom parameters that carry an agent profile: its `parameters`, plus `agent_name`,
/// `agent_skill` and `agent_style` from the profile's fields (these win over parameters of
/// the same name).
pub fn agent_parameters(agent: &AgentProfile) -> BTreeMap<String, String> {
    let mut parameters = agent.parameters.clone();
    parameters.insert(AGENT_NAME.to_owned(), agent.name.clone());
    parameters.insert(AGENT_SKILL.to_owned(), agent.skill.to_string());
    parameters.insert(AGENT_STYLE.to_owned(), agent.style.clone());
    parameters
}

/// The persona's system prompt for `customer`: `template` with `{name}`, `{issue}`, `{mood}`
/// and `{patience_s}` filled in.
pub fn render_prompt(template: &str, customer: &CustomerProfile) -> String {
    template
        .replace("{name}", &customer.name)
        .replace("{issue}", &customer.issue)
        .replace("{mood}", &customer.mood)
        .replace("{patience_s}", &format!("{}", customer.patience_s))
}

/// Splits the model's reply into the words to speak and whether it ends the call: every word
/// that is [`END_MARKER`] (any case, punctuation around it ignored) is removed, and its
/// presence ends the call. At most `max_words` words are kept.
pub fn strip_end_marker(reply: &str, max_words: usize) -> (String, bool) {
    let mut ended = false;
    let mut words = Vec::new();
    for word in reply.split_whitespace() {
        let core = word.trim_matches(|c: char| !c.is_alphanumeric());
        if core.eq_ignore_ascii_case(END_MARKER) {
            ended = true;
        } else if words.len() < max_words {
            words.push(word);
        }
    }
    (words.join(" "), ended)
}

/// How a persona speaks and how long it waits.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonaSettings {
    /// The system prompt template (see [`render_prompt`]).
    pub prompt: String,
    /// The model's sampling temperature, 0 to 2.
    pub temperature: f32,
    /// The model's token cap per reply.
    pub max_completion_tokens: u32,
    /// Words of a reply spoken at most (the rest is dropped).
    pub max_reply_words: usize,
    /// After the bot goes quiet, how long to wait for the recognizer's last words.
    pub finalize_wait: Duration,
    /// Longest the model may take for a whole reply.
    pub reply_timeout: Duration,
    /// Longest the synthesis of one reply may take.
    pub speech_timeout: Duration,
}

impl Default for PersonaSettings {
    fn default() -> Self {
        PersonaSettings {
            prompt: DEFAULT_PROMPT.to_owned(),
            temperature: 0.8,
            max_completion_tokens: 120,
            max_reply_words: 60,
            finalize_wait: Duration::from_millis(1500),
            reply_timeout: Duration::from_secs(20),
            speech_timeout: Duration::from_secs(20),
        }
    }
}

impl PersonaSettings {
    /// Checks every value; the error names it.
    pub fn validate(&self) -> Result<(), PersonaError> {
        let bad = |what: String| Err(PersonaError::Invalid(format!("persona settings: {what}")));
        if self.prompt.trim().is_empty() {
            return bad("the prompt is empty".to_owned());
        }
        if !(self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature)) {
            return bad(format!(
                "temperature must be 0..=2, not {}",
                self.temperature
            ));
        }
        if self.max_completion_tokens == 0 {
            return bad("max_completion_tokens must be at least 1".to_owned());
        }
        if self.max_reply_words == 0 {
            return bad("max_reply_words must be at least 1".to_owned());
        }
        for (name, value) in [
            ("finalize_wait", self.finalize_wait),
            ("reply_timeout", self.reply_timeout),
            ("speech_timeout", self.speech_timeout),
        ] {
            if value.is_zero() {
                return bad(format!("{name} must be more than zero"));
            }
        }
        Ok(())
    }
}

/// The persona's providers.
pub struct PersonaDeps {
    /// Its ears.
    pub stt: Arc<dyn SttProvider>,
    /// Its mind.
    pub llm: Arc<dyn ChatModel>,
    /// Its voice.
    pub tts: Arc<dyn TtsProvider>,
    /// Where transcripts go.
    pub transcripts_dir: Option<PathBuf>,
    /// Prompt, model settings and waits.
    pub settings: PersonaSettings,
}

impl std::fmt::Debug for PersonaDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonaDeps")
            .field("stt", &self.stt.name())
            .field("llm", &self.llm.name())
            .field("tts", &self.tts.name())
            .field("transcripts_dir", &self.transcripts_dir)
            .field("settings", &self.settings)
            .finish()
    }
}

impl PersonaDeps {
    /// The persona's providers from a gateway-style config, with the default
    /// [`PersonaSettings`].
    pub fn from_config(
        config: &Config,
        transcripts_dir: Option<PathBuf>,
    ) -> Result<PersonaDeps, PersonaError> {
        Self::from_config_with(config, transcripts_dir, PersonaSettings::default())
    }

    /// The persona's providers from a gateway-style config: Deepgram speech-to-text
    /// (`[stt.deepgram]`), the OpenAI-compatible model (`[llm]`, with the settings'
    /// temperature and token cap) and the configured synthesizer (`[tts]`), built as the
    /// gateway builds its own.
    pub fn from_config_with(
        config: &Config,
        transcripts_dir: Option<PathBuf>,
        settings: PersonaSettings,
    ) -> Result<PersonaDeps, PersonaError> {
        settings.validate()?;
        let metrics = Metrics::new().map_err(|e| PersonaError::Invalid(format!("metrics: {e}")))?;
        if config.stt.deepgram.api_key.is_empty() {
            return Err(PersonaError::Provider {
                what: "speech-to-text",
                reason: "no key: set DEEPGRAM_API_KEY (or stt.deepgram.api_key)".to_owned(),
            });
        }
        let stt = DeepgramStt::new(config.stt.deepgram.clone(), metrics.clone()).map_err(|e| {
            PersonaError::Provider {
                what: "speech-to-text",
                reason: e.to_string(),
            }
        })?;
        if !config.llm_configured() {
            return Err(PersonaError::Provider {
                what: "language model",
                reason: "none configured: set OPENAI_API_KEY (or OPENAI_BASE_URL)".to_owned(),
            });
        }
        let mut llm_config = config.llm.clone();
        llm_config.temperature = settings.temperature;
        llm_config.max_completion_tokens = settings.max_completion_tokens;
        let llm =
            OpenAiChat::new(llm_config, metrics.clone()).map_err(|e| PersonaError::Provider {
                what: "language model",
                reason: e.to_string(),
            })?;
        let tts_error = |reason: String| PersonaError::Provider {
            what: "text-to-speech",
            reason,
        };
        let tts = match crate::pipeline::script_synth(config, &metrics, None) {
            Ok(Some(ScriptVoice::Synth { provider, .. })) => provider,
            Ok(Some(ScriptVoice::Recorded(_)) | None) => {
                return Err(tts_error(format!(
                    "no key for tts.provider {:?}",
                    config.tts.provider
                )));
            }
            Err(e) => return Err(tts_error(e.to_string())),
        };
        Ok(PersonaDeps {
            stt: Arc::new(stt),
            llm: Arc::new(llm),
            tts,
            transcripts_dir,
            settings,
        })
    }
}

/// A running persona.
///
/// Order of outputs: each reply is one [`PersonaOutput::Say`]; when the reply ends the call
/// (or the persona gives up, or a provider fails) a [`PersonaOutput::HangUp`] follows, and
/// nothing after it. The caller finishes playing the last `Say` before hanging up.
#[derive(Debug)]
pub struct PersonaHandle {
    /// To the persona.
    pub input: tokio::sync::mpsc::Sender<PersonaInput>,
    /// From the persona.
    pub output: tokio::sync::mpsc::Receiver<PersonaOutput>,
    /// Ends with the transcript.
    pub task: tokio::task::JoinHandle<Transcript>,
}

/// Starts a call's persona (needs a Tokio runtime).
///
/// The task feeds [`PersonaInput::BotAudio`] to its recognizer and keeps the bot's final
/// transcripts. On [`PersonaInput::BotQuiet`] it asks the recognizer to finalize, waits for
/// the last words (up to [`PersonaSettings::finalize_wait`]), asks the model for a reply in
/// character, synthesizes it at 8 kHz and sends [`PersonaOutput::Say`]; a reply with
/// [`END_MARKER`] is followed by `HangUp { reason: "goal reached" }`. When the bot says
/// nothing for the customer's patience after the persona's last words (or after the start),
/// it sends `HangUp { reason: "patience ran out" }`; a provider failure sends
/// `HangUp { reason: "persona error: …" }`. On [`PersonaInput::CallEnded`] or when the input
/// closes it closes its providers, writes the transcript (when a directory is set) and
/// returns it.
pub fn spawn(deps: Arc<PersonaDeps>, pair: PersonaPair, call: u32) -> PersonaHandle {
    let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
    let (output_tx, output_rx) = mpsc::channel(OUTPUT_QUEUE);
    let task = tokio::spawn(run_session(deps, pair, call, input_rx, output_tx));
    PersonaHandle {
        input: input_tx,
        output: output_rx,
        task,
    }
}

/// A reply written and synthesized.
struct Spoken {
    /// The words spoken (marker removed); empty when the reply was only the marker.
    text: String,
    /// Their audio; `None` when there is nothing to say.
    clip: Option<Arc<Clip>>,
    /// The reply ends the call.
    ended: bool,
}

/// A reply in progress: gives the voice back with the result.
type ReplyFuture =
    Pin<Box<dyn Future<Output = (Box<dyn TtsVoice>, Result<Spoken, String>)> + Send>>;

/// What the session is doing.
enum Phase {
    /// Hearing the bot.
    Listening,
    /// The bot went quiet: waiting for the recognizer's last words until then.
    Finalizing(Instant),
    /// Writing and synthesizing a reply.
    Replying(ReplyFuture),
}

/// The session's state apart from its channels.
struct State {
    deps: Arc<PersonaDeps>,
    pair: PersonaPair,
    started: Instant,
    output: mpsc::Sender<PersonaOutput>,
    voice: Option<Box<dyn TtsVoice>>,
    fed_samples: u64,
    heard: Vec<String>,
    dialogue: Vec<ChatMessage>,
    lines: Vec<TranscriptLine>,
    patience_deadline: Option<Instant>,
    hung_up: Option<String>,
    cancel: CancellationToken,
}

/// One wake-up of the session loop.
enum Wake {
    Input(Option<PersonaInput>),
    Stt(Option<SttEvent>),
    Replied((Box<dyn TtsVoice>, Result<Spoken, String>)),
    Timer,
}

async fn run_session(
    deps: Arc<PersonaDeps>,
    pair: PersonaPair,
    call: u32,
    mut input: mpsc::Receiver<PersonaInput>,
    output: mpsc::Sender<PersonaOutput>,
) -> Transcript {
    let started = Instant::now();
    let mut stt = deps.stt.open(
        CallId::new(),
        SttAudioFormat {
            encoding: SttEncoding::Linear16,
            sample_rate: SAMPLE_RATE,
        },
    );
    let voice = deps.tts.voice(SAMPLE_RATE);
    let patience = Duration::from_secs_f64(pair.customer.patience_s);
    let mut state = State {
        deps,
        pair,
        started,
        output,
        voice: Some(voice),
        fed_samples: 0,
        heard: Vec::new(),
        dialogue: Vec::new(),
        lines: Vec::new(),
        patience_deadline: Some(started + patience),
        hung_up: None,
        cancel: CancellationToken::new(),
    };
    let mut phase = Phase::Listening;
    let mut stt_open = true;
    loop {
        let wake_at = match &phase {
            Phase::Finalizing(until) => Some(*until),
            Phase::Listening if state.hung_up.is_none() => state.patience_deadline,
            _ => None,
        };
        let wake = {
            let reply = async {
                match &mut phase {
                    Phase::Replying(reply) => reply.await,
                    _ => std::future::pending().await,
                }
            };
            let timer = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                message = input.recv() => Wake::Input(message),
                event = stt.recv(), if stt_open => Wake::Stt(event),
                done = reply => Wake::Replied(done),
                () = timer => Wake::Timer,
            }
        };
        match wake {
            Wake::Input(None | Some(PersonaInput::CallEnded)) => break,
            Wake::Input(Some(PersonaInput::BotAudio(pcm))) => state.hear(&stt, &pcm),
            Wake::Input(Some(PersonaInput::BotQuiet)) => {
                if state.hung_up.is_none() && matches!(phase, Phase::Listening) {
                    // No answer to the finalize (queue full, recognizer gone) is covered by
                    // the wait's end.
                    stt.finalize();
                    phase = Phase::Finalizing(Instant::now() + state.deps.settings.finalize_wait);
                }
            }
            Wake::Stt(None) => {
                stt_open = false;
                state.fail("speech-to-text: the recognizer stopped").await;
                phase = Phase::Listening;
            }
            Wake::Stt(Some(SttEvent::Final {
                text,
                from_finalize,
                ..
            })) => {
                state.heard_words(&text);
                if from_finalize && matches!(phase, Phase::Finalizing(_)) {
                    phase = state.start_reply().await;
                }
            }
            Wake::Stt(Some(SttEvent::Failed { error })) => {
                state.fail(&format!("speech-to-text: {error}")).await;
                phase = Phase::Listening;
            }
            Wake::Stt(Some(_)) => {}
            Wake::Replied((voice, result)) => {
                state.voice = Some(voice);
                phase = Phase::Listening;
                match result {
                    Ok(spoken) => state.said(spoken).await,
                    Err(error) => state.fail(&error).await,
                }
            }
            Wake::Timer => match phase {
                Phase::Finalizing(_) => phase = state.start_reply().await,
                _ => state.hang_up("patience ran out").await,
            },
        }
    }
    state.cancel.cancel();
    if let Phase::Replying(reply) = phase
        && let Ok((voice, _)) = tokio::time::timeout(CLOSE_WAIT, reply).await
    {
        state.voice = Some(voice);
    }
    stt.close();
    if let Some(mut voice) = state.voice.take() {
        let _ = tokio::time::timeout(CLOSE_WAIT, voice.close()).await;
    }
    let transcript = Transcript {
        call,
        pair: state.pair,
        lines: state.lines,
        ended: state.hung_up.unwrap_or_else(|| "call ended".to_owned()),
    };
    if let Some(dir) = &state.deps.transcripts_dir
        && let Err(error) = write_transcript(dir, &transcript).await
    {
        tracing::warn!(call, %error, "persona transcript not written");
    }
    transcript
}

impl State {
    fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Feeds bot audio to the recognizer; voiced audio means the bot is talking.
    fn hear(&mut self, stt: &SttStream, pcm: &[i16]) {
        if pcm.is_empty() {
            return;
        }
        let at_ms = self.fed_samples * 1000 / u64::from(SAMPLE_RATE);
        let mut bytes = Vec::with_capacity(pcm.len() * 2);
        Encoding::Linear16.encode_into(pcm, &mut bytes);
        // A full queue drops this piece: the recognizer is behind, the call goes on.
        let _ = stt.push_audio(at_ms, bytes.into());
        self.fed_samples += pcm.len() as u64;
        if pcm
            .chunks(FRAME_SAMPLES_8K)
            .any(|w| dbfs(rms(w)) >= VOICED_DBFS)
        {
            self.patience_deadline = None;
        }
    }

    /// Keeps the bot's words of one final transcript.
    fn heard_words(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.lines.push(TranscriptLine {
            at_s: self.now_s(),
            speaker: Speaker::Bot,
            text: text.to_owned(),
        });
        self.heard.push(text.to_owned());
    }

    /// Starts writing a reply to what the bot said since the last one.
    async fn start_reply(&mut self) -> Phase {
        let Some(voice) = self.voice.take() else {
            self.fail("text-to-speech: no voice").await;
            return Phase::Listening;
        };
        let heard = std::mem::take(&mut self.heard);
        let content = if heard.is_empty() {
            INAUDIBLE.to_owned()
        } else {
            heard.join(" ")
        };
        self.dialogue.push(ChatMessage::User { content });
        let settings = &self.deps.settings;
        let mut messages = Vec::with_capacity(self.dialogue.len() + 1);
        messages.push(ChatMessage::System {
            content: render_prompt(&settings.prompt, &self.pair.customer),
        });
        messages.extend(self.dialogue.iter().cloned());
        let request = ChatRequest {
            messages,
            tools: Vec::new(),
            deadline: std::time::Instant::now() + settings.reply_timeout,
        };
        Phase::Replying(Box::pin(compose(
            self.deps.llm.clone(),
            voice,
            request,
            settings.clone(),
            self.cancel.clone(),
        )))
    }

    /// Sends a reply to the caller, then hangs up if it ended the call.
    async fn said(&mut self, spoken: Spoken) {
        if let Some(clip) = spoken.clip {
            let seconds = clip.pcm.len() as f64 / f64::from(SAMPLE_RATE);
            self.lines.push(TranscriptLine {
                at_s: self.now_s(),
                speaker: Speaker::Caller,
                text: spoken.text.clone(),
            });
            self.dialogue.push(ChatMessage::Assistant {
                content: Some(spoken.text.clone()),
                tool_calls: Vec::new(),
            });
            // A caller that stopped reading has ended the call; the input will close.
            let _ = self
                .output
                .send(PersonaOutput::Say {
                    clip,
                    text: spoken.text,
                })
                .await;
            let patience = Duration::from_secs_f64(self.pair.customer.patience_s);
            self.patience_deadline =
                Some(Instant::now() + Duration::from_secs_f64(seconds) + patience);
        }
        if spoken.ended {
            self.hang_up("goal reached").await;
        }
    }

    async fn fail(&mut self, error: &str) {
        self.hang_up(&format!("persona error: {error}")).await;
    }

    /// Tells the caller to hang up (once).
    async fn hang_up(&mut self, reason: &str) {
        if self.hung_up.is_some() {
            return;
        }
        self.hung_up = Some(reason.to_owned());
        self.patience_deadline = None;
        let _ = self
            .output
            .send(PersonaOutput::HangUp {
                reason: reason.to_owned(),
            })
            .await;
    }
}

/// Writes a reply with the model and speaks it with the voice; gives the voice back.
async fn compose(
    llm: Arc<dyn ChatModel>,
    mut voice: Box<dyn TtsVoice>,
    request: ChatRequest,
    settings: PersonaSettings,
    cancel: CancellationToken,
) -> (Box<dyn TtsVoice>, Result<Spoken, String>) {
    let result = compose_with(&llm, voice.as_mut(), request, &settings, &cancel).await;
    (voice, result)
}

async fn compose_with(
    llm: &Arc<dyn ChatModel>,
    voice: &mut dyn TtsVoice,
    request: ChatRequest,
    settings: &PersonaSettings,
    cancel: &CancellationToken,
) -> Result<Spoken, String> {
    let reply = tokio::select! {
        reply = tokio::time::timeout(settings.reply_timeout, complete(llm, request)) => {
            reply.map_err(|_| {
                format!(
                    "language model: no whole reply within {} ms",
                    settings.reply_timeout.as_millis()
                )
            })??
        }
        () = cancel.cancelled() => return Err("cancelled".to_owned()),
    };
    let (text, ended) = strip_end_marker(&reply, settings.max_reply_words);
    if text.is_empty() {
        if ended {
            return Ok(Spoken {
                text,
                clip: None,
                ended,
            });
        }
        return Err("language model: the reply was empty".to_owned());
    }
    let pcm = tokio::time::timeout(settings.speech_timeout, speak(voice, &text, cancel))
        .await
        .map_err(|_| {
            format!(
                "text-to-speech: no whole reply within {} ms",
                settings.speech_timeout.as_millis()
            )
        })??;
    let clip = Clip::from_pcm("persona", pcm).map_err(|e| format!("text-to-speech: {e}"))?;
    Ok(Spoken {
        text,
        clip: Some(Arc::new(clip)),
        ended,
    })
}

/// The model's whole reply (text only).
async fn complete(llm: &Arc<dyn ChatModel>, request: ChatRequest) -> Result<String, String> {
    let stream = llm
        .stream(request)
        .await
        .map_err(|e| format!("language model: {e}"))?;
    let mut deltas = stream.deltas;
    let mut text = String::new();
    while let Some(delta) = deltas.next().await {
        match delta {
            Ok(LlmDelta::Text(piece)) => text.push_str(&piece),
            Ok(LlmDelta::ToolCalls(_)) => {}
            Ok(LlmDelta::Finished { .. }) => break,
            Err(e) => return Err(format!("language model: {e}")),
        }
    }
    Ok(text)
}

/// Synthesizes `text` at 8 kHz, all of it.
async fn speak(
    voice: &mut dyn TtsVoice,
    text: &str,
    cancel: &CancellationToken,
) -> Result<Vec<i16>, String> {
    let (tx, mut rx) = mpsc::channel::<Vec<i16>>(TTS_AUDIO_QUEUE);
    let mut pcm = Vec::new();
    let result = {
        let synthesis = voice.synthesize(text, &tx, cancel);
        tokio::pin!(synthesis);
        loop {
            tokio::select! {
                result = &mut synthesis => break result,
                Some(piece) = rx.recv() => pcm.extend_from_slice(&piece),
            }
        }
    };
    while let Ok(piece) = rx.try_recv() {
        pcm.extend_from_slice(&piece);
    }
    let stats = result.map_err(|e| format!("text-to-speech: {e}"))?;
    if stats.cancelled {
        return Err("cancelled".to_owned());
    }
    Ok(pcm)
}

/// The transcript as plain text: a heading, one `[12.3s] bot: …` line per utterance, and
/// how it ended.
pub fn transcript_text(transcript: &Transcript) -> String {
    let customer = &transcript.pair.customer;
    let agent = &transcript.pair.agent;
    let mut text = format!(
        "call {}: {} ({}, {}) with agent {} (skill {}, {})\n",
        transcript.call,
        customer.name,
        customer.issue,
        customer.mood,
        agent.name,
        agent.skill,
        agent.style
    );
    for line in &transcript.lines {
        let who = match line.speaker {
            Speaker::Bot => "bot",
            Speaker::Caller => "caller",
        };
        text.push_str(&format!("[{:.1}s] {who}: {}\n", line.at_s, line.text));
    }
    text.push_str(&format!("ended: {}\n", transcript.ended));
    text
}

/// Where a call's transcript goes in `dir`: `call-00042.json` and `call-00042.txt`.
pub fn transcript_paths(dir: &Path, call: u32) -> (PathBuf, PathBuf) {
    let stem = format!("call-{call:05}");
    (
        dir.join(format!("{stem}.json")),
        dir.join(format!("{stem}.txt")),
    )
}

/// Writes a transcript to `dir` (created if missing) as JSON and as plain text; returns the
/// two paths.
pub async fn write_transcript(
    dir: &Path,
    transcript: &Transcript,
) -> Result<(PathBuf, PathBuf), PersonaError> {
    let (json_path, text_path) = transcript_paths(dir, transcript.call);
    let write_error = |path: &Path, e: std::io::Error| PersonaError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| write_error(dir, e))?;
    let json = serde_json::to_string_pretty(transcript)
        .map_err(|e| PersonaError::Invalid(format!("transcript to JSON: {e}")))?;
    tokio::fs::write(&json_path, json)
        .await
        .map_err(|e| write_error(&json_path, e))?;
    tokio::fs::write(&text_path, transcript_text(transcript))
        .await
        .map_err(|e| write_error(&text_path, e))?;
    Ok((json_path, text_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn customer(name: &str, complexity: u8) -> CustomerProfile {
        CustomerProfile {
            name: name.to_owned(),
            issue: format!("{name}'s issue"),
            complexity,
            mood: "calm".to_owned(),
            patience_s: 30.0,
        }
    }

    fn agent(name: &str, skill: u8) -> AgentProfile {
        AgentProfile {
            name: name.to_owned(),
            skill,
            style: "brief".to_owned(),
            parameters: BTreeMap::new(),
        }
    }

    fn names(pairs: &[PersonaPair]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|p| (p.customer.name.clone(), p.agent.name.clone()))
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(c, a)| ((*c).to_owned(), (*a).to_owned()))
            .collect()
    }

    #[test]
    fn skill_covers_complexity_picks_the_least_skilled_able_agent() {
        let set = PersonaSet {
            customers: vec![customer("easy", 1), customer("mid", 3), customer("hard", 5)],
            agents: vec![agent("junior", 2), agent("senior", 4), agent("lead", 5)],
            rule: PairingRule::SkillCoversComplexity,
        };
        assert_eq!(
            names(&pair(&set, 6)),
            owned(&[
                ("easy", "junior"),
                ("mid", "senior"),
                ("hard", "lead"),
                ("easy", "junior"),
                ("mid", "senior"),
                ("hard", "lead"),
            ])
        );
    }

    #[test]
    fn equal_agents_take_turns_in_file_order() {
        let set = PersonaSet {
            customers: vec![customer("a", 2), customer("b", 3)],
            agents: vec![
                agent("x3", 3),
                agent("y1", 1),
                agent("z3", 3),
                agent("w3", 3),
            ],
            rule: PairingRule::SkillCoversComplexity,
        };
        // Both customers need skill ≥ 2: the skill-3 agents serve them in turn.
        assert_eq!(
            names(&pair(&set, 5)),
            owned(&[
                ("a", "x3"),
                ("b", "z3"),
                ("a", "w3"),
                ("b", "x3"),
                ("a", "z3"),
            ])
        );
    }

    #[test]
    fn too_hard_an_issue_gets_the_most_skilled_agents_in_turn() {
        let set = PersonaSet {
            customers: vec![customer("hard", 5), customer("easy", 1)],
            agents: vec![
                agent("p2", 2),
                agent("q3", 3),
                agent("r3", 3),
                agent("s1", 1),
            ],
            rule: PairingRule::SkillCoversComplexity,
        };
        assert_eq!(
            names(&pair(&set, 6)),
            owned(&[
                ("hard", "q3"),
                ("easy", "s1"),
                ("hard", "r3"),
                ("easy", "s1"),
                ("hard", "q3"),
                ("easy", "s1"),
            ])
        );
    }

    #[test]
    fn round_robin_pairs_by_index() {
        let set = PersonaSet {
            customers: vec![customer("c1", 5), customer("c2", 1), customer("c3", 1)],
            agents: vec![agent("a1", 1), agent("a2", 5)],
            rule: PairingRule::RoundRobin,
        };
        assert_eq!(
            names(&pair(&set, 5)),
            owned(&[
                ("c1", "a1"),
                ("c2", "a2"),
                ("c3", "a1"),
                ("c1", "a2"),
                ("c2", "a1"),
            ])
        );
    }

    #[test]
    fn pairing_nothing_gives_nothing() {
        let mut set = PersonaSet {
            customers: vec![customer("c", 1)],
            agents: Vec::new(),
            rule: PairingRule::SkillCoversComplexity,
        };
        assert!(pair(&set, 3).is_empty());
        set.agents.push(agent("a", 1));
        assert!(pair(&set, 0).is_empty());
        set.customers.clear();
        assert!(pair(&set, 3).is_empty());
    }

    #[test]
    fn agent_parameters_carry_the_profile() {
        let mut a = agent("Sam", 4);
        a.parameters.insert("branch".to_owned(), "north".to_owned());
        let p = agent_parameters(&a);
        let expected: BTreeMap<String, String> = [
            ("agent_name", "Sam"),
            ("agent_skill", "4"),
            ("agent_style", "brief"),
            ("branch", "north"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(p, expected);
    }

    #[test]
    fn prompt_is_filled_from_the_profile() {
        let mut c = customer("Ana", 2);
        c.issue = "a double charge".to_owned();
        c.mood = "annoyed".to_owned();
        assert_eq!(
            render_prompt(DEFAULT_PROMPT, &c),
            "You are Ana, calling about a double charge. You feel annoyed. Speak briefly like \
             a person on the phone, one or two sentences. When your issue is resolved or you \
             give up, end with the word GOODBYE."
        );
        assert_eq!(
            render_prompt("{name} waits {patience_s} s", &c),
            "Ana waits 30 s"
        );
    }

    #[test]
    fn end_marker_is_removed_and_ends_the_call() {
        assert_eq!(
            strip_end_marker("Great, thanks for your help. GOODBYE", 60),
            ("Great, thanks for your help.".to_owned(), true)
        );
        assert_eq!(
            strip_end_marker("Okay. Goodbye!", 60),
            ("Okay.".to_owned(), true)
        );
        assert_eq!(strip_end_marker("GOODBYE.", 60), (String::new(), true));
        assert_eq!(
            strip_end_marker("  I still need   help.  ", 60),
            ("I still need help.".to_owned(), false)
        );
        assert_eq!(
            strip_end_marker("one two three four GOODBYE", 2),
            ("one two".to_owned(), true)
        );
        assert_eq!(
            strip_end_marker("goodbyes are hard", 60),
            ("goodbyes are hard".to_owned(), false)
        );
    }

    fn parse_c(text: &str) -> Result<Vec<CustomerProfile>, PersonaError> {
        parse_customers(text, Path::new("customers.json"))
    }

    fn parse_a(text: &str) -> Result<Vec<AgentProfile>, PersonaError> {
        parse_agents(text, Path::new("agents.json"))
    }

    #[test]
    fn customers_parse() {
        let text = r#"[{"name":"Ana","issue":"a double charge","complexity":3,"mood":"annoyed","patience_s":45}]"#;
        let mut expected = customer("Ana", 3);
        expected.issue = "a double charge".to_owned();
        expected.mood = "annoyed".to_owned();
        expected.patience_s = 45.0;
        assert_eq!(parse_c(text).unwrap(), vec![expected]);
    }

    #[test]
    fn customer_rules_name_the_entry() {
        let cases = [
            (
                r#""name":" ","issue":"i","complexity":1,"mood":"m","patience_s":5"#,
                "name is empty",
            ),
            (
                r#""name":"n","issue":"","complexity":1,"mood":"m","patience_s":5"#,
                "issue is empty",
            ),
            (
                r#""name":"n","issue":"i","complexity":1,"mood":"","patience_s":5"#,
                "mood is empty",
            ),
            (
                r#""name":"n","issue":"i","complexity":0,"mood":"m","patience_s":5"#,
                "complexity must be 1..=5, not 0",
            ),
            (
                r#""name":"n","issue":"i","complexity":6,"mood":"m","patience_s":5"#,
                "complexity must be 1..=5, not 6",
            ),
            (
                r#""name":"n","issue":"i","complexity":1,"mood":"m","patience_s":0.5"#,
                "patience_s must be 1..=600 seconds, not 0.5",
            ),
            (
                r#""name":"n","issue":"i","complexity":1,"mood":"m","patience_s":601"#,
                "patience_s must be 1..=600 seconds, not 601",
            ),
        ];
        let good = r#"{"name":"ok","issue":"i","complexity":1,"mood":"m","patience_s":5}"#;
        for (fields, what) in cases {
            let text = format!("[{good}, {{{fields}}}]");
            assert_eq!(
                parse_c(&text).unwrap_err().to_string(),
                format!("customers.json: entry 2: {what}"),
                "{fields}"
            );
        }
    }

    #[test]
    fn agent_rules_name_the_entry() {
        let cases = [
            (r#""name":"","skill":1,"style":"s""#, "name is empty"),
            (r#""name":"n","skill":1,"style":" ""#, "style is empty"),
            (
                r#""name":"n","skill":0,"style":"s""#,
                "skill must be 1..=5, not 0",
            ),
            (
                r#""name":"n","skill":9,"style":"s""#,
                "skill must be 1..=5, not 9",
            ),
            (
                r#""name":"n","skill":1,"style":"s","parameters":{"":"x"}"#,
                "a parameter has an empty name",
            ),
            (
                r#""name":"n","skill":1,"style":"s","parameters":{"agent_skill":"5"}"#,
                "parameter \"agent_skill\" is reserved: it is set from the profile's own field",
            ),
        ];
        for (fields, what) in cases {
            let text = format!("[{{{fields}}}]");
            assert_eq!(
                parse_a(&text).unwrap_err().to_string(),
                format!("agents.json: entry 1: {what}"),
                "{fields}"
            );
        }
    }

    #[test]
    fn json_errors_keep_line_and_column() {
        let err =
            parse_a("[\n  {\"name\": \"n\", \"skill\": 1, \"style\": \"s\", \"extra\": 1}\n]")
                .unwrap_err();
        match &err {
            PersonaError::Json { line, column, .. } => assert_eq!((*line, *column), (2, 49)),
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("agents.json:2:49: unknown field `extra`"),
            "{err}"
        );
        let err =
            parse_c("[{\"name\": \"n\",\n \"issue\": \"i\", \"complexity\": 300}]").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("customers.json:2:32: invalid value: integer `300`, expected u8"),
            "{err}"
        );
        let err = parse_c("{}").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("customers.json:1:1: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn empty_and_oversized_lists_are_refused() {
        assert_eq!(
            parse_c("[]").unwrap_err().to_string(),
            "customers.json: no profiles (the array is empty)"
        );
        let one = r#"{"name":"n","skill":1,"style":"s"}"#;
        let text = format!("[{}]", vec![one; MAX_PROFILES + 1].join(","));
        assert_eq!(
            parse_a(&text).unwrap_err().to_string(),
            "agents.json: 10001 profiles, more than the 10000 allowed"
        );
        let text = format!("[{}]", vec![one; MAX_PROFILES].join(","));
        assert_eq!(parse_a(&text).unwrap().len(), MAX_PROFILES);
    }

    #[test]
    fn settings_are_checked() {
        assert!(PersonaSettings::default().validate().is_ok());
        let bad = |f: &dyn Fn(&mut PersonaSettings)| {
            let mut s = PersonaSettings::default();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert_eq!(
            bad(&|s| s.prompt = " ".into()),
            "persona settings: the prompt is empty"
        );
        assert_eq!(
            bad(&|s| s.temperature = 2.5),
            "persona settings: temperature must be 0..=2, not 2.5"
        );
        assert_eq!(
            bad(&|s| s.max_reply_words = 0),
            "persona settings: max_reply_words must be at least 1"
        );
        assert_eq!(
            bad(&|s| s.finalize_wait = Duration::ZERO),
            "persona settings: finalize_wait must be more than zero"
        );
    }

    #[test]
    fn transcript_text_lists_lines_in_order() {
        let transcript = Transcript {
            call: 42,
            pair: PersonaPair {
                customer: customer("Ana", 2),
                agent: agent("Sam", 3),
            },
            lines: vec![
                TranscriptLine {
                    at_s: 1.234,
                    speaker: Speaker::Bot,
                    text: "Hello, how can I help?".into(),
                },
                TranscriptLine {
                    at_s: 12.26,
                    speaker: Speaker::Caller,
                    text: "My bill is wrong.".into(),
                },
            ],
            ended: "goal reached".into(),
        };
        assert_eq!(
            transcript_text(&transcript),
            "call 42: Ana (Ana's issue, calm) with agent Sam (skill 3, brief)\n\
             [1.2s] bot: Hello, how can I help?\n\
             [12.3s] caller: My bill is wrong.\n\
             ended: goal reached\n"
        );
        let (json, text) = transcript_paths(Path::new("/t"), 42);
        assert_eq!(json, PathBuf::from("/t/call-00042.json"));
        assert_eq!(text, PathBuf::from("/t/call-00042.txt"));
    }

    proptest! {
        #[test]
        fn parsing_anything_never_panics(text in ".{0,200}") {
            let _ = parse_c(&text);
            let _ = parse_a(&text);
        }

        #[test]
        fn pairing_is_deterministic_and_fair(
            complexities in proptest::collection::vec(1u8..=5, 1..6),
            skills in proptest::collection::vec(1u8..=5, 1..6),
            calls in 0usize..40,
        ) {
            let set = PersonaSet {
                customers: complexities.iter().enumerate().map(|(i, c)| customer(&format!("c{i}"), *c)).collect(),
                agents: skills.iter().enumerate().map(|(i, s)| agent(&format!("a{i}"), *s)).collect(),
                rule: PairingRule::SkillCoversComplexity,
            };
            let pairs = pair(&set, calls);
            prop_assert_eq!(&pairs, &pair(&set, calls));
            prop_assert_eq!(pairs.len(), calls);
            let top = skills.iter().copied().max().unwrap_or(0);
            for (i, p) in pairs.iter().enumerate() {
                prop_assert_eq!(&p.customer, &set.customers[i % set.customers.len()]);
                let c = p.customer.complexity;
                let wanted = skills.iter().copied().filter(|s| *s >= c).min().unwrap_or(top);
                prop_assert_eq!(p.agent.skill, wanted);
            }
        }
    }
}
