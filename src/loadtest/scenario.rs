//! The scenario a simulated caller follows: its steps, the custom parameters it sends in
//! `start`, and (optionally) the personas that take the caller's side.
//!
//! The file format and its parser are below the types; errors name the line and column.
//!
//! # File format (TOML)
//!
//! ```toml
//! name = "appointment confirmation"   # default: the file's stem
//! from = "+15550100"                  # default +15550100
//! to = "+15550199"                    # default +15550199
//! repeat = false                      # start again from the first step when done
//! answer_timeout = "5s"               # a turn not answered within this is unanswered
//!
//! [parameters]                        # custom parameters sent in `start` (strings)
//! tenant = "acme"
//!
//! [personas]                          # only with a `persona` step, and required by one
//! customers = "personas/customers.json"
//! agents = "personas/agents.json"
//! rule = "skill_covers_complexity"    # or "round_robin"
//!
//! [[step]]
//! wait_for_bot = "3s"                 # until the bot has spoken and gone quiet, at most 3 s
//! [[step]]
//! say = "caller_question.wav"         # expect_reply = false for a backchannel
//! [[step]]
//! barge_in = "caller_interrupt.wav"   # over the bot's next audio …
//! after = "800ms"                     # … once this much of it has played (default 800ms)
//! [[step]]
//! pause = "1.5s"                      # silence frames; `silence = "3s"` is the same
//! [[step]]
//! dtmf = "1234#"                      # 0-9 * #; gap between digits (default 150ms);
//! gap = "150ms"                       # expect_reply (default true)
//! [[step]]
//! persona = 6                         # hand the caller's side to the persona, ≤ 6 replies
//! [[step]]
//! hangup = true                       # must be the last step
//! ```
//!
//! Each `[[step]]` holds exactly one action. Durations are a number and a unit (`ms`, `s`,
//! `m`, `h`): `"20ms"`, `"1.5s"`, `"2m"`, at most one hour. Clip names resolve against the
//! scenario file's folder; a bare file name not found there is looked up in `fixtures/audio/`
//! under the current directory. Clips must be 8 kHz mono 16-bit WAV with voiced audio.
//! Persona files (JSON arrays of [`super::persona::CustomerProfile`] and
//! [`super::persona::AgentProfile`], read by [`super::persona::load_customers`] and
//! [`super::persona::load_agents`]) resolve against the scenario file's folder.
//! Unknown keys are refused. Every error starts with `LINE:COL:` of the offending key or value
//! ([`load`] puts the file's path in front).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::clip::Clip;
use super::persona::{self, PairingRule, PersonaSet};

/// One scenario, resolved: clips loaded, durations parsed, personas read.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name, for reports.
    pub name: String,
    /// Custom parameters sent in `start` (Twilio `customParameters`, Exotel
    /// `custom_parameters`). A persona pair's agent parameters are added per call.
    pub parameters: BTreeMap<String, String>,
    /// The caller's number (`start.from` on Exotel; a `from` custom parameter on Twilio).
    pub from: String,
    /// The number called (`start.to` on Exotel; a `to` custom parameter on Twilio).
    pub to: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// When the steps run out: start again from the first (true) or hang up (false).
    pub repeat: bool,
    /// A turn the bot has not begun to answer after this long is unanswered.
    pub answer_timeout: Duration,
    /// The personas, when a step hands the call to one.
    pub personas: Option<PersonaSet>,
}

/// One thing the caller does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Wait until the bot has spoken and its audio has played out (playback drained and no
    /// new audio for the turn gap). `timeout` bounds the wait for the bot to begin: if it has
    /// not spoken by then, go on (nothing is counted unanswered unless a turn was waiting);
    /// an answer that has begun plays out, up to `caller::WAIT_FOR_BOT_CAP` longer.
    WaitForBot {
        /// Longest wait.
        timeout: Duration,
    },
    /// Say a clip now.
    Say {
        /// What to say.
        clip: Arc<Clip>,
        /// The bot should answer it (a measured turn); false for backchannels.
        expect_reply: bool,
    },
    /// Wait for the bot's next audio to start playing, then after `after` say `clip` over it.
    BargeIn {
        /// What to say over the bot.
        clip: Arc<Clip>,
        /// Bot audio played before the caller cuts in.
        after: Duration,
    },
    /// Stay silent (send silence frames) this long.
    Pause(Duration),
    /// Press keys: one `dtmf` message per digit, `gap` apart.
    Dtmf {
        /// Digits: `0-9`, `*`, `#`.
        digits: String,
        /// Time between digits.
        gap: Duration,
        /// The bot should answer the digits (a measured turn).
        expect_reply: bool,
    },
    /// Hand the caller's side to the call's persona for up to `max_turns` replies (it may
    /// hang up earlier).
    Persona {
        /// Most persona replies.
        max_turns: u32,
    },
    /// Hang up: send `stop` and close the socket.
    Hangup,
}

/// Why a scenario file is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    /// Any problem, with where it is.
    #[error("{0}")]
    Invalid(String),
}

/// The caller's number when the file gives none.
pub const DEFAULT_FROM: &str = "+15550100";
/// The number called when the file gives none.
pub const DEFAULT_TO: &str = "+15550199";
/// The answer timeout when the file gives none.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Bot audio played before a barge-in cuts in, when the step gives no `after`.
pub const DEFAULT_BARGE_AFTER: Duration = Duration::from_millis(800);
/// Time between DTMF digits, when the step gives no `gap`.
pub const DEFAULT_DTMF_GAP: Duration = Duration::from_millis(150);
/// The longest duration a scenario may give.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// The most replies a persona step may allow.
pub const MAX_PERSONA_TURNS: u32 = 1000;
/// Where bare clip names are looked up, relative to the current directory.
pub const FIXTURES_DIR: &str = "fixtures/audio";

/// The file as written, with where each value is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    from: Option<String>,
    to: Option<String>,
    repeat: Option<bool>,
    answer_timeout: Option<Spanned<String>>,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    personas: Option<Spanned<RawPersonas>>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
}

/// `[personas]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPersonas {
    customers: Spanned<String>,
    agents: Spanned<String>,
    rule: Option<PairingRule>,
}

/// One `[[step]]` as written: actions and their options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    wait_for_bot: Option<Spanned<String>>,
    say: Option<Spanned<String>>,
    barge_in: Option<Spanned<String>>,
    pause: Option<Spanned<String>>,
    silence: Option<Spanned<String>>,
    dtmf: Option<Spanned<String>>,
    persona: Option<Spanned<i64>>,
    hangup: Option<Spanned<bool>>,
    after: Option<Spanned<String>>,
    gap: Option<Spanned<String>>,
    expect_reply: Option<Spanned<bool>>,
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Builds errors that point into one text.
struct Locator<'a> {
    text: &'a str,
}

impl Locator<'_> {
    fn at(&self, span: &Range<usize>, message: impl std::fmt::Display) -> ScenarioError {
        let (line, column) = line_col(self.text, span.start);
        ScenarioError::Invalid(format!("{line}:{column}: {message}"))
    }
}

/// Parses a duration such as `20ms`, `1.5s`, `2m` or `1h` (at most [`MAX_DURATION`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_up_to(text, MAX_DURATION)
}

/// [`parse_duration`] with another upper bound than [`MAX_DURATION`].
pub fn parse_duration_up_to(text: &str, max: Duration) -> Result<Duration, String> {
    let trimmed = text.trim();
    let unit_at = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(unit_at);
    let bad = || {
        format!("bad duration {text:?}: expected a number and a unit (ms, s, m, h), e.g. \"1.5s\"")
    };
    let unit_nanos: u128 = match unit.trim() {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(bad()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty()
        || fraction.contains('.')
        || whole.len() > 12
        || fraction.len() > 9
    {
        return Err(bad());
    }
    let digits = |s: &str| -> Result<u128, String> {
        if s.is_empty() {
            Ok(0)
        } else {
            s.parse::<u128>().map_err(|_| bad())
        }
    };
    let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| bad())?);
    let nanos = digits(whole)? * unit_nanos + digits(fraction)? * unit_nanos / scale;
    if nanos > max.as_nanos() {
        let limit = match max.as_secs() {
            s if s % 3600 == 0 => format!("{}h", s / 3600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        };
        return Err(format!("duration {text:?} is over the limit of {limit}"));
    }
    let nanos = u64::try_from(nanos).map_err(|_| bad())?;
    Ok(Duration::from_nanos(nanos))
}

/// Parses a scenario; clip paths resolve against `base_dir`. Its name, when the text gives
/// none, is `scenario`.
pub fn parse(text: &str, base_dir: &Path) -> Result<Scenario, ScenarioError> {
    parse_named(text, base_dir, "scenario")
}

/// Reads and parses a scenario file; errors start with its path. Its name, when the file
/// gives none, is the file's stem.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ScenarioError::Invalid(format!("{}: cannot read: {e}", path.display())))?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    let stem = path
        .file_stem()
        .map_or_else(|| "scenario".into(), |s| s.to_string_lossy());
    parse_named(&text, base_dir, &stem).map_err(|ScenarioError::Invalid(e)| {
        ScenarioError::Invalid(format!("{}:{e}", path.display()))
    })
}

fn parse_named(text: &str, base_dir: &Path, default_name: &str) -> Result<Scenario, ScenarioError> {
    let here = Locator { text };
    let raw: RawScenario = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        here.at(&span, e.message().trim())
    })?;
    let duration = |value: &Spanned<String>, positive: bool| -> Result<Duration, ScenarioError> {
        let d = parse_duration(value.get_ref()).map_err(|e| here.at(&value.span(), e))?;
        if positive && d.is_zero() {
            return Err(here.at(&value.span(), "the duration must be above zero"));
        }
        Ok(d)
    };
    let answer_timeout = match &raw.answer_timeout {
        Some(value) => duration(value, true)?,
        None => DEFAULT_ANSWER_TIMEOUT,
    };
    if raw.step.is_empty() {
        return Err(here.at(&(0..0), "no steps: add at least one [[step]]"));
    }
    let mut clips = ClipCache {
        base_dir,
        loaded: BTreeMap::new(),
    };
    let mut steps = Vec::with_capacity(raw.step.len());
    let mut persona_step: Option<Range<usize>> = None;
    for (index, spanned) in raw.step.iter().enumerate() {
        // The `[[step]]` header (or the inline table).
        let step_span = spanned.span();
        let raw_step = spanned.get_ref();
        if let Some(Step::Hangup) = steps.last() {
            return Err(here.at(
                &step_span,
                format!("step {}: nothing can follow a hangup step", index + 1),
            ));
        }
        let actions: Vec<&str> = [
            ("wait_for_bot", raw_step.wait_for_bot.is_some()),
            ("say", raw_step.say.is_some()),
            ("barge_in", raw_step.barge_in.is_some()),
            ("pause", raw_step.pause.is_some()),
            ("silence", raw_step.silence.is_some()),
            ("dtmf", raw_step.dtmf.is_some()),
            ("persona", raw_step.persona.is_some()),
            ("hangup", raw_step.hangup.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        let action = match actions.as_slice() {
            [one] => *one,
            [] => {
                return Err(here.at(
                    &step_span,
                    format!(
                        "step {}: no action; give one of wait_for_bot, say, barge_in, pause, \
                         silence, dtmf, persona, hangup",
                        index + 1
                    ),
                ));
            }
            many => {
                return Err(here.at(
                    &step_span,
                    format!(
                        "step {}: more than one action ({}); give each its own [[step]]",
                        index + 1,
                        many.join(", ")
                    ),
                ));
            }
        };
        let allowed: &[&str] = match action {
            "say" => &["expect_reply"],
            "barge_in" => &["after"],
            "dtmf" => &["gap", "expect_reply"],
            _ => &[],
        };
        let options = [
            ("after", raw_step.after.as_ref().map(Spanned::span)),
            ("gap", raw_step.gap.as_ref().map(Spanned::span)),
            (
                "expect_reply",
                raw_step.expect_reply.as_ref().map(Spanned::span),
            ),
        ];
        for (option, span) in options {
            if let Some(span) = span
                && !allowed.contains(&option)
            {
                return Err(here.at(
                    &span,
                    format!("`{option}` does not apply to a {action} step"),
                ));
            }
        }
        let expect_reply = raw_step.expect_reply.as_ref().is_none_or(|v| *v.get_ref());
        let step = if let Some(value) = &raw_step.wait_for_bot {
            Step::WaitForBot {
                timeout: duration(value, true)?,
            }
        } else if let Some(value) = &raw_step.say {
            Step::Say {
                clip: clips.get(value).map_err(|e| here.at(&value.span(), e))?,
                expect_reply,
            }
        } else if let Some(value) = &raw_step.barge_in {
            Step::BargeIn {
                clip: clips.get(value).map_err(|e| here.at(&value.span(), e))?,
                after: match &raw_step.after {
                    Some(after) => duration(after, false)?,
                    None => DEFAULT_BARGE_AFTER,
                },
            }
        } else if let Some(value) = raw_step.pause.as_ref().or(raw_step.silence.as_ref()) {
            Step::Pause(duration(value, true)?)
        } else if let Some(value) = &raw_step.dtmf {
            let digits = value.get_ref();
            if digits.is_empty() {
                return Err(here.at(&value.span(), "no digits: give one or more of 0-9 * #"));
            }
            if let Some(bad) = digits
                .chars()
                .find(|c| !(c.is_ascii_digit() || *c == '*' || *c == '#'))
            {
                return Err(here.at(
                    &value.span(),
                    format!("{bad:?} is not a DTMF digit (0-9, *, #)"),
                ));
            }
            Step::Dtmf {
                digits: digits.clone(),
                gap: match &raw_step.gap {
                    Some(gap) => duration(gap, false)?,
                    None => DEFAULT_DTMF_GAP,
                },
                expect_reply,
            }
        } else if let Some(value) = &raw_step.persona {
            let turns = *value.get_ref();
            let max_turns = u32::try_from(turns)
                .ok()
                .filter(|t| (1..=MAX_PERSONA_TURNS).contains(t))
                .ok_or_else(|| {
                    here.at(
                        &value.span(),
                        format!("persona turns must be 1 to {MAX_PERSONA_TURNS}, not {turns}"),
                    )
                })?;
            persona_step.get_or_insert(value.span());
            Step::Persona { max_turns }
        } else if let Some(value) = &raw_step.hangup {
            if !*value.get_ref() {
                return Err(here.at(
                    &value.span(),
                    "hangup = false does nothing; write hangup = true or drop the step",
                ));
            }
            Step::Hangup
        } else {
            return Err(here.at(&step_span, format!("step {}: no action", index + 1)));
        };
        steps.push(step);
    }
    let personas = match (&raw.personas, persona_step) {
        (Some(personas), Some(_)) => Some(read_personas(&here, personas.get_ref(), base_dir)?),
        (Some(personas), None) => {
            return Err(here.at(
                &personas.span(),
                "[personas] is given but no step hands the call to a persona (persona = N)",
            ));
        }
        (None, Some(span)) => {
            return Err(here.at(
                &span,
                "a persona step needs a [personas] table (customers, agents, rule)",
            ));
        }
        (None, None) => None,
    };
    Ok(Scenario {
        name: raw.name.unwrap_or_else(|| default_name.to_string()),
        parameters: raw.parameters,
        from: raw.from.unwrap_or_else(|| DEFAULT_FROM.to_string()),
        to: raw.to.unwrap_or_else(|| DEFAULT_TO.to_string()),
        steps,
        repeat: raw.repeat.unwrap_or(false),
        answer_timeout,
        personas,
    })
}

/// Clips loaded so far, by resolved path (a clip said twice is loaded once).
struct ClipCache<'a> {
    base_dir: &'a Path,
    loaded: BTreeMap<PathBuf, Arc<Clip>>,
}

impl ClipCache<'_> {
    fn get(&mut self, name: &Spanned<String>) -> Result<Arc<Clip>, String> {
        let name = name.get_ref();
        if name.trim().is_empty() {
            return Err("empty clip name".to_string());
        }
        let path = resolve_clip(name, self.base_dir)?;
        if let Some(clip) = self.loaded.get(&path) {
            return Ok(Arc::clone(clip));
        }
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let clip = Arc::new(Clip::from_wav_bytes(name.clone(), &bytes).map_err(|e| e.to_string())?);
        self.loaded.insert(path, Arc::clone(&clip));
        Ok(clip)
    }
}

/// Where clip `name` is: relative to `base_dir`, else (a bare file name) in [`FIXTURES_DIR`].
pub fn resolve_clip(name: &str, base_dir: &Path) -> Result<PathBuf, String> {
    let mut tried = vec![base_dir.join(name)];
    let bare = Path::new(name).components().count() == 1 && !Path::new(name).is_absolute();
    if bare {
        tried.push(Path::new(FIXTURES_DIR).join(name));
    }
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "clip {name:?} not found (tried {})",
        tried.join(", ")
    ))
}

/// Reads the persona files of `[personas]` (paths relative to `base_dir`), checked by
/// [`persona::load_customers`] and [`persona::load_agents`].
fn read_personas(
    here: &Locator<'_>,
    raw: &RawPersonas,
    base_dir: &Path,
) -> Result<PersonaSet, ScenarioError> {
    let customers = persona::load_customers(&base_dir.join(raw.customers.get_ref()))
        .map_err(|e| here.at(&raw.customers.span(), e))?;
    let agents = persona::load_agents(&base_dir.join(raw.agents.get_ref()))
        .map_err(|e| here.at(&raw.agents.span(), e))?;
    Ok(PersonaSet {
        customers,
        agents,
        rule: raw.rule.unwrap_or(PairingRule::SkillCoversComplexity),
    })
}

/// A clip built into the binary; a fixture that cannot be decoded (never the case for the
/// files shipped) becomes one second of a voiced tone so the scenario still runs.
fn embedded_clip(cell: &'static OnceLock<Arc<Clip>>, name: &str, bytes: &[u8]) -> Arc<Clip> {
    Arc::clone(cell.get_or_init(|| {
        Arc::new(Clip::from_wav_bytes(name, bytes).unwrap_or_else(|_| {
            let pcm: Vec<i16> = (0..8000)
                .map(|i| ((i as f32 * 0.3).sin() * 8000.0) as i16)
                .collect();
            let frames = pcm.len() / super::clip::FRAME_SAMPLES_8K;
            Clip {
                name: name.to_string(),
                pcm,
                onset_frame: 0,
                end_frame: frames.saturating_sub(1),
            }
        }))
    }))
}

/// The built-in question clip (`fixtures/audio/caller_question.wav`).
pub fn question_clip() -> Arc<Clip> {
    static CELL: OnceLock<Arc<Clip>> = OnceLock::new();
    embedded_clip(
        &CELL,
        "caller_question.wav",
        include_bytes!("../../fixtures/audio/caller_question.wav"),
    )
}

/// The built-in interruption clip (`fixtures/audio/caller_interrupt.wav`).
pub fn interrupt_clip() -> Arc<Clip> {
    static CELL: OnceLock<Arc<Clip>> = OnceLock::new();
    embedded_clip(
        &CELL,
        "caller_interrupt.wav",
        include_bytes!("../../fixtures/audio/caller_interrupt.wav"),
    )
}

/// Silence between the end of the bot's answer and the next question.
const DEFAULT_PAUSE: Duration = Duration::from_millis(1500);

/// The built-in scenario: wait for the bot (its greeting, if any, then each answer), pause
/// 1.5 s, ask the question, again until the run ends.
///
/// One loop serves the greeting and the answers: `wait_for_bot 5s, pause 1.5s, say
/// caller_question.wav`, repeated, so each answer is awaited for up to the answer timeout.
pub fn default_conversation() -> Scenario {
    let question = question_clip();
    Scenario {
        name: "conversation".to_string(),
        parameters: BTreeMap::new(),
        from: DEFAULT_FROM.to_string(),
        to: DEFAULT_TO.to_string(),
        steps: vec![
            Step::WaitForBot {
                timeout: DEFAULT_ANSWER_TIMEOUT,
            },
            Step::Pause(DEFAULT_PAUSE),
            Step::Say {
                clip: question,
                expect_reply: true,
            },
        ],
        repeat: true,
        answer_timeout: DEFAULT_ANSWER_TIMEOUT,
        personas: None,
    }
}

/// The built-in scenario with every second answer interrupted 800 ms in by
/// `caller_interrupt.wav`; the bot's answer to the interruption is awaited like any other.
pub fn default_barge_in() -> Scenario {
    let question = question_clip();
    let wait = Step::WaitForBot {
        timeout: DEFAULT_ANSWER_TIMEOUT,
    };
    let say = Step::Say {
        clip: question,
        expect_reply: true,
    };
    Scenario {
        name: "conversation with barge-in".to_string(),
        steps: vec![
            wait.clone(),
            Step::Pause(DEFAULT_PAUSE),
            say.clone(),
            wait,
            Step::Pause(DEFAULT_PAUSE),
            say,
            Step::BargeIn {
                clip: interrupt_clip(),
                after: DEFAULT_BARGE_AFTER,
            },
        ],
        ..default_conversation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CUSTOMERS: &str = r#"[{"name": "Ana", "issue": "double charge", "complexity": 3,
        "mood": "annoyed", "patience_s": 20.0}]"#;
    const AGENTS: &str = r#"[{"name": "Sam", "skill": 4, "style": "warm"}]"#;

    /// A folder with persona files, for scenarios that name them.
    fn dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("customers.json"), CUSTOMERS).expect("write");
        std::fs::write(dir.path().join("agents.json"), AGENTS).expect("write");
        dir
    }

    fn error(text: &str) -> String {
        let dir = dir();
        match parse(text, dir.path()) {
            Ok(s) => format!("parsed: {s:?}"),
            Err(ScenarioError::Invalid(e)) => e,
        }
    }

    fn fixture(name: &str) -> Clip {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(FIXTURES_DIR)
            .join(name);
        let bytes = std::fs::read(path).expect("fixture");
        Clip::from_wav_bytes(name, &bytes).expect("clip")
    }

    const FULL: &str = r#"
name = "everything"
from = "+15551111"
to = "+15552222"
repeat = true
answer_timeout = "7.5s"

[parameters]
tenant = "acme"
lang = "en"

[personas]
customers = "customers.json"
agents = "agents.json"
rule = "round_robin"

[[step]]
wait_for_bot = "3s"
[[step]]
say = "caller_question.wav"
[[step]]
say = "backchannel_okay.wav"
expect_reply = false
[[step]]
barge_in = "caller_interrupt.wav"
after = "800ms"
[[step]]
barge_in = "caller_interrupt.wav"
[[step]]
pause = "1.5s"
[[step]]
silence = "2m"
[[step]]
dtmf = "1234#*"
gap = "90ms"
[[step]]
dtmf = "0"
expect_reply = false
[[step]]
persona = 6
[[step]]
hangup = true
"#;

    #[test]
    fn every_step_kind() {
        let dir = dir();
        let s = parse(FULL, dir.path()).expect("parses");
        assert_eq!(s.name, "everything");
        assert_eq!((s.from.as_str(), s.to.as_str()), ("+15551111", "+15552222"));
        assert!(s.repeat);
        assert_eq!(s.answer_timeout, Duration::from_millis(7500));
        assert_eq!(
            s.parameters,
            BTreeMap::from([
                ("lang".to_string(), "en".to_string()),
                ("tenant".to_string(), "acme".to_string())
            ])
        );
        let question = Arc::new(fixture("caller_question.wav"));
        let okay = Arc::new(fixture("backchannel_okay.wav"));
        let interrupt = Arc::new(fixture("caller_interrupt.wav"));
        assert_eq!(
            s.steps,
            vec![
                Step::WaitForBot {
                    timeout: Duration::from_secs(3)
                },
                Step::Say {
                    clip: question,
                    expect_reply: true
                },
                Step::Say {
                    clip: okay,
                    expect_reply: false
                },
                Step::BargeIn {
                    clip: Arc::clone(&interrupt),
                    after: Duration::from_millis(800)
                },
                Step::BargeIn {
                    clip: interrupt,
                    after: DEFAULT_BARGE_AFTER
                },
                Step::Pause(Duration::from_millis(1500)),
                Step::Pause(Duration::from_secs(120)),
                Step::Dtmf {
                    digits: "1234#*".into(),
                    gap: Duration::from_millis(90),
                    expect_reply: true
                },
                Step::Dtmf {
                    digits: "0".into(),
                    gap: DEFAULT_DTMF_GAP,
                    expect_reply: false
                },
                Step::Persona { max_turns: 6 },
                Step::Hangup,
            ]
        );
        // The same clip said twice is loaded once.
        match (&s.steps[3], &s.steps[4]) {
            (Step::BargeIn { clip: a, .. }, Step::BargeIn { clip: b, .. }) => {
                assert!(Arc::ptr_eq(a, b));
            }
            other => panic!("not barge-ins: {other:?}"),
        }
        let personas = s.personas.expect("personas");
        assert_eq!(personas.rule, PairingRule::RoundRobin);
        assert_eq!(personas.customers[0].name, "Ana");
        assert_eq!(personas.agents[0].skill, 4);
    }

    #[test]
    fn defaults_of_a_minimal_file() {
        let s = parse("[[step]]\nhangup = true\n", Path::new(".")).expect("parses");
        assert_eq!(s.name, "scenario");
        assert_eq!((s.from.as_str(), s.to.as_str()), (DEFAULT_FROM, DEFAULT_TO));
        assert!(!s.repeat);
        assert_eq!(s.answer_timeout, DEFAULT_ANSWER_TIMEOUT);
        assert!(s.parameters.is_empty());
        assert_eq!(s.personas, None);
        assert_eq!(s.steps, vec![Step::Hangup]);
    }

    #[test]
    fn clip_relative_to_the_scenario_file() {
        let dir = dir();
        let sub = dir.path().join("clips");
        std::fs::create_dir(&sub).expect("mkdir");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audio/caller_yes.wav");
        std::fs::copy(source, sub.join("yes.wav")).expect("copy");
        let s = parse("[[step]]\nsay = \"clips/yes.wav\"\n", dir.path()).expect("parses");
        match &s.steps[0] {
            Step::Say { clip, .. } => {
                assert_eq!(clip.name, "clips/yes.wav");
                assert_eq!(clip.pcm, fixture("caller_yes.wav").pcm);
            }
            other => panic!("not a say step: {other:?}"),
        }
    }

    #[test]
    fn durations() {
        let ok = [
            ("20ms", Duration::from_millis(20)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("0.25s", Duration::from_millis(250)),
            (".5s", Duration::from_millis(500)),
            ("3 s", Duration::from_secs(3)),
            ("0ms", Duration::ZERO),
            ("0.001ms", Duration::from_micros(1)),
            ("60m", Duration::from_secs(3600)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "5", "s", "1.2.3s", "-1s", "1d", "1 hour", "1e3ms", "."] {
            assert_eq!(
                parse_duration(bad),
                Err(format!(
                    "bad duration {bad:?}: expected a number and a unit (ms, s, m, h), e.g. \"1.5s\""
                )),
                "{bad}"
            );
        }
        assert_eq!(
            parse_duration("61m"),
            Err("duration \"61m\" is over the limit of 1h".to_string())
        );
        assert_eq!(
            parse_duration("99999999999999h").map_err(|e| e.contains("bad duration")),
            Err(true)
        );
    }

    #[test]
    fn repeat_is_read() {
        let s = parse("repeat = true\n[[step]]\npause = \"1s\"\n", Path::new(".")).expect("ok");
        assert!(s.repeat);
        let s = parse("repeat = false\n[[step]]\npause = \"1s\"\n", Path::new(".")).expect("ok");
        assert!(!s.repeat);
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases: &[(&str, &str)] = &[
            // Unknown keys, at the key.
            ("nme = \"x\"\n", "1:1: unknown field `nme`, expected one of"),
            (
                "[[step]]\nhangup = true\nwhen = \"1s\"\n",
                "3:1: unknown field `when`, expected one of",
            ),
            (
                "[personas]\ncustomers = \"customers.json\"\nagents = \"agents.json\"\nmood = 1\n\
                 [[step]]\npersona = 2\n",
                "4:1: unknown field `mood`",
            ),
            // Wrong types, at the value.
            (
                "repeat = \"yes\"\n",
                "1:10: invalid type: string \"yes\", expected a boolean",
            ),
            (
                "[parameters]\ntenant = 5\n[[step]]\nhangup = true\n",
                "2:10: invalid type: integer `5`, expected a string",
            ),
            // TOML syntax.
            ("name = \n", "1:8: "),
            // Steps.
            ("name = \"x\"\n", "1:1: no steps: add at least one [[step]]"),
            (
                "[[step]]\npause = \"1s\"\n\n[[step]]\nafter = \"1s\"\n",
                "4:1: step 2: no action; give one of wait_for_bot, say, barge_in, pause, \
                 silence, dtmf, persona, hangup",
            ),
            (
                "[[step]]\npause = \"1s\"\nsay = \"caller_yes.wav\"\n",
                "1:1: step 1: more than one action (say, pause); give each its own [[step]]",
            ),
            (
                "step = [{ pause = \"1s\" }, {}]\n",
                "1:27: step 2: no action; give one of",
            ),
            (
                "[[step]]\nhangup = true\n[[step]]\npause = \"1s\"\n",
                "3:1: step 2: nothing can follow a hangup step",
            ),
            (
                "[[step]]\nhangup = false\n",
                "2:10: hangup = false does nothing; write hangup = true or drop the step",
            ),
            (
                "[[step]]\nsay = \"caller_yes.wav\"\ngap = \"1s\"\n",
                "3:7: `gap` does not apply to a say step",
            ),
            (
                "[[step]]\npause = \"1s\"\nexpect_reply = true\n",
                "3:16: `expect_reply` does not apply to a pause step",
            ),
            (
                "[[step]]\ndtmf = \"12\"\nafter = \"1s\"\n",
                "3:9: `after` does not apply to a dtmf step",
            ),
            // Durations.
            (
                "answer_timeout = \"soon\"\n[[step]]\nhangup = true\n",
                "1:18: bad duration \"soon\": expected a number and a unit (ms, s, m, h), \
                 e.g. \"1.5s\"",
            ),
            (
                "[[step]]\npause = \"2h\"\n",
                "2:9: duration \"2h\" is over the limit of 1h",
            ),
            (
                "[[step]]\nwait_for_bot = \"0s\"\n",
                "2:16: the duration must be above zero",
            ),
            (
                "[[step]]\ndtmf = \"1\"\ngap = \"x\"\n",
                "3:7: bad duration \"x\": expected a number and a unit (ms, s, m, h), \
                 e.g. \"1.5s\"",
            ),
            // DTMF digits.
            (
                "[[step]]\ndtmf = \"12a\"\n",
                "2:8: 'a' is not a DTMF digit (0-9, *, #)",
            ),
            (
                "[[step]]\ndtmf = \"\"\n",
                "2:8: no digits: give one or more of 0-9 * #",
            ),
            // Clips.
            ("[[step]]\nsay = \"\"\n", "2:7: empty clip name"),
            (
                "[[step]]\nsay = \"silence_2s.wav\"\n",
                "2:7: silence_2s.wav: no voiced audio (no 20 ms window at or above -40 dBFS)",
            ),
            // Personas.
            (
                "[[step]]\npersona = 3\n",
                "2:11: a persona step needs a [personas] table",
            ),
            (
                "[personas]\ncustomers = \"customers.json\"\nagents = \"agents.json\"\n\
                 [[step]]\nhangup = true\n",
                "1:1: [personas] is given but no step hands the call to a persona",
            ),
            (
                "[personas]\ncustomers = \"customers.json\"\nagents = \"agents.json\"\n\
                 [[step]]\npersona = 0\n",
                "5:11: persona turns must be 1 to 1000, not 0",
            ),
            (
                "[personas]\ncustomers = \"customers.json\"\nagents = \"agents.json\"\n\
                 rule = \"best\"\n[[step]]\npersona = 2\n",
                "4:8: unknown variant `best`, expected `skill_covers_complexity` or `round_robin`",
            ),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(got.starts_with(want), "{text:?}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn missing_clip_lists_the_paths_tried() {
        let dir = dir();
        let base = dir.path().display();
        assert_eq!(
            parse("[[step]]\n  barge_in = \"nope.wav\"\n", dir.path()),
            Err(ScenarioError::Invalid(format!(
                "2:14: clip \"nope.wav\" not found (tried {base}/nope.wav, fixtures/audio/nope.wav)"
            )))
        );
        // A path with a folder is only looked for next to the scenario.
        assert_eq!(
            parse("[[step]]\nsay = \"sub/nope.wav\"\n", dir.path()),
            Err(ScenarioError::Invalid(format!(
                "2:7: clip \"sub/nope.wav\" not found (tried {base}/sub/nope.wav)"
            )))
        );
    }

    #[test]
    fn clip_in_the_wrong_format() {
        let dir = dir();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer =
            hound::WavWriter::create(dir.path().join("wide.wav"), spec).expect("create");
        for i in 0..1600 {
            writer.write_sample((i % 200) as i16 * 100).expect("sample");
        }
        writer.finalize().expect("finalize");
        std::fs::write(dir.path().join("text.wav"), "not audio").expect("write");
        let wide = parse("[[step]]\nsay = \"wide.wav\"\n", dir.path());
        assert_eq!(
            wide,
            Err(ScenarioError::Invalid(
                "2:7: wide.wav: need 8 kHz mono 16-bit PCM, got 16000 Hz, 1 channel(s), 16 bits"
                    .into()
            ))
        );
        let text = parse("[[step]]\nsay = \"text.wav\"\n", dir.path());
        assert!(
            matches!(&text, Err(ScenarioError::Invalid(e)) if e.starts_with("2:7: text.wav: ")),
            "{text:?}"
        );
    }

    #[test]
    fn persona_files_are_checked() {
        let dir = dir();
        std::fs::write(dir.path().join("empty.json"), "[]").expect("write");
        std::fs::write(
            dir.path().join("extra.json"),
            r#"[{"name": "A", "skill": 1, "style": "brief", "age": 3}]"#,
        )
        .expect("write");
        let with = |customers: &str, agents: &str| {
            parse(
                &format!(
                    "[personas]\ncustomers = \"{customers}\"\nagents = \"{agents}\"\n\
                     [[step]]\npersona = 2\n"
                ),
                dir.path(),
            )
        };
        let base = dir.path().display();
        assert_eq!(
            with("empty.json", "agents.json"),
            Err(ScenarioError::Invalid(format!(
                "2:13: {base}/empty.json: no profiles (the array is empty)"
            )))
        );
        let missing = with("customers.json", "missing.json");
        assert!(
            matches!(&missing, Err(ScenarioError::Invalid(e))
                if e.starts_with(&format!("3:10: {base}/missing.json: "))),
            "{missing:?}"
        );
        let extra = with("customers.json", "extra.json");
        assert!(
            matches!(&extra, Err(ScenarioError::Invalid(e))
                if e.starts_with(&format!("3:10: {base}/extra.json:1:"))
                    && e.contains("unknown field `age`")),
            "{extra:?}"
        );
        // Profiles are checked, not only parsed.
        std::fs::write(
            dir.path().join("unskilled.json"),
            r#"[{"name": "A", "skill": 9, "style": "brief"}]"#,
        )
        .expect("write");
        let unskilled = with("customers.json", "unskilled.json");
        assert!(
            matches!(&unskilled, Err(ScenarioError::Invalid(e))
                if e.starts_with(&format!("3:10: {base}/unskilled.json: entry "))),
            "{unskilled:?}"
        );
        let ok = with("customers.json", "agents.json").expect("parses");
        assert_eq!(
            ok.personas.map(|p| p.rule),
            Some(PairingRule::SkillCoversComplexity)
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = dir();
        let path = dir.path().join("menu_test.toml");
        std::fs::write(&path, "[[step]]\ndtmf = \"1\"\n").expect("write");
        let s = load(&path).expect("loads");
        assert_eq!(s.name, "menu_test");
        std::fs::write(&path, "[[step]]\ndtmf = \"x\"\n").expect("write");
        assert_eq!(
            load(&path),
            Err(ScenarioError::Invalid(format!(
                "{}:2:8: 'x' is not a DTMF digit (0-9, *, #)",
                path.display()
            )))
        );
        let gone = dir.path().join("gone.toml");
        assert!(matches!(load(&gone),
            Err(ScenarioError::Invalid(e)) if e.starts_with(&format!("{}: cannot read: ", gone.display()))));
    }

    #[test]
    fn built_in_scenarios() {
        let question = Arc::new(fixture("caller_question.wav"));
        let interrupt = Arc::new(fixture("caller_interrupt.wav"));
        assert_eq!(question_clip(), question);
        assert_eq!(interrupt_clip(), interrupt);
        let wait = Step::WaitForBot {
            timeout: Duration::from_secs(5),
        };
        let pause = Step::Pause(Duration::from_millis(1500));
        let say = Step::Say {
            clip: question,
            expect_reply: true,
        };
        let plain = default_conversation();
        assert!(plain.repeat && plain.personas.is_none());
        assert_eq!(plain.answer_timeout, Duration::from_secs(5));
        assert_eq!(plain.steps, vec![wait.clone(), pause.clone(), say.clone()]);
        let barge = default_barge_in();
        assert!(barge.repeat);
        assert_eq!(
            barge.steps,
            vec![
                wait.clone(),
                pause.clone(),
                say.clone(),
                wait,
                pause,
                say,
                Step::BargeIn {
                    clip: interrupt,
                    after: Duration::from_millis(800)
                }
            ]
        );
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("", 5), (1, 1));
        assert_eq!(line_col("é", 1), (1, 1));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text, Path::new("/nonexistent"));
        }

        #[test]
        fn step_like_text_never_panics(
            key in prop::sample::select(vec![
                "wait_for_bot", "say", "barge_in", "pause", "silence", "dtmf", "persona",
                "hangup", "after", "gap", "expect_reply", "name", "repeat",
            ]),
            value in "[\"0-9a-z.#* \\[\\]=\\n]{0,20}",
        ) {
            let text = format!("[[step]]\n{key} = {value}\n");
            let _ = parse(&text, Path::new("/nonexistent"));
        }

        #[test]
        fn arbitrary_durations_never_panic(text in "\\PC{0,24}") {
            if let Ok(d) = parse_duration(&text) {
                prop_assert!(d <= MAX_DURATION);
            }
        }
    }
}
