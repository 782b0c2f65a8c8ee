//! Loading scripts for calls: each `*.dsc` file of the scripts folder parsed (an error stops
//! start-up with `file:line:col: message`), its prompt audio loaded into memory from the prompt
//! cache (or from recorded prompts), ready to be served as agent `script:<file stem>`.
//!
//! Loading does blocking file reads: it runs at start-up, never on a call's path. Static
//! prompts missing from the cache are listed so the caller can synthesize them in the
//! background ([`ScriptPrompts::fill_missing`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cache::{CacheError, PromptCache};
use super::diag::Diagnostics;
use super::fixture_voice::{DEMO_VARIABLES, FIXTURE_VOICE, FixtureVoice};
use super::parse::{Parsed, parse};
use super::print::script_hash;
use super::prompts::{LoadedScript, PromptSource};
use super::source::ScriptPrompts;
use super::spoken::distinct_texts;
use crate::call::conversation::ConversationDeps;
use crate::config::is_script_name;
use crate::tts::TtsProvider;

/// Extension of script files.
pub const SCRIPT_EXT: &str = "dsc";

/// Why a script cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The scripts folder cannot be listed.
    #[error("scripts folder {path}: {source}")]
    Dir {
        /// The folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A script cannot be read (missing, unreadable, not UTF-8).
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file name cannot name an agent.
    #[error(
        "{path}: the file name must be letters, digits, `_` or `-` before `.dsc` (it names agent `script:<name>`)"
    )]
    Name {
        /// The file.
        path: PathBuf,
    },
    /// The script has errors: one `file:line:col: message` per line.
    #[error("{}", located(path, diagnostics))]
    Parse {
        /// The file.
        path: PathBuf,
        /// Its errors and warnings.
        diagnostics: Diagnostics,
    },
    /// The script's voice cannot be set up.
    #[error("{path}: voice: {message}")]
    Voice {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The prompt cache cannot be read.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// `diagnostics` with `path` in front of each, one per line (warnings marked).
pub fn located(path: &Path, diagnostics: &Diagnostics) -> String {
    diagnostics
        .all()
        .iter()
        .map(|d| {
            let mark = if d.is_error() { "" } else { "warning: " };
            format!("{mark}{}:{d}", path.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a script speaks with.
#[derive(Clone)]
pub enum ScriptVoice {
    /// A synthesizer; `key` names its voice in the prompt cache (provider, model, voice).
    Synth {
        /// The synthesizer, set to the voice.
        provider: Arc<dyn TtsProvider>,
        /// The voice's cache key.
        key: String,
    },
    /// Recorded prompts (no synthesizer key configured).
    Recorded(FixtureVoice),
}

impl ScriptVoice {
    /// The voice's key in the prompt cache.
    pub fn key(&self) -> &str {
        match self {
            ScriptVoice::Synth { key, .. } => key,
            ScriptVoice::Recorded(_) => FIXTURE_VOICE,
        }
    }

    /// The synthesizer behind the voice.
    pub fn provider(&self) -> Arc<dyn TtsProvider> {
        match self {
            ScriptVoice::Synth { provider, .. } => provider.clone(),
            ScriptVoice::Recorded(recorded) => Arc::new(recorded.clone()),
        }
    }
}

impl std::fmt::Debug for ScriptVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScriptVoice({})", self.key())
    }
}

/// A script file, parsed.
#[derive(Debug, Clone)]
pub struct ScriptFile {
    /// The file.
    pub path: PathBuf,
    /// Its stem: calls run it as agent `script:<name>`.
    pub name: String,
    /// The parse result (flow, warnings, source map).
    pub parsed: Parsed,
    /// The flow's hash.
    pub hash: String,
}

impl ScriptFile {
    /// The parse warnings, each as `file:line:col: message`.
    pub fn warnings(&self) -> Vec<String> {
        self.parsed
            .warnings
            .iter()
            .map(|w| format!("{}:{w}", self.path.display()))
            .collect()
    }
}

/// Reads and parses the script at `path`.
pub fn read_script(path: &Path) -> Result<ScriptFile, LoadError> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| is_script_name(s))
        .ok_or_else(|| LoadError::Name {
            path: path.to_path_buf(),
        })?
        .to_owned();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parsed = parse(&text).map_err(|diagnostics| LoadError::Parse {
        path: path.to_path_buf(),
        diagnostics,
    })?;
    let hash = script_hash(&parsed.flow);
    Ok(ScriptFile {
        path: path.to_path_buf(),
        name,
        parsed,
        hash,
    })
}

/// The `*.dsc` files in `dir`, sorted by name.
pub fn script_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let dir_error = |source| LoadError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let path = entry.map_err(dir_error)?.path();
        if path.extension().is_some_and(|e| e == SCRIPT_EXT) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A script loaded for calls, with what its prompts still lack.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The script, ready to be served as agent `script:<name>`.
    pub script: LoadedScript,
    /// Its prompt audio (the same as `script.prompts`).
    pub prompts: ScriptPrompts,
    /// The voice it speaks with.
    pub voice: ScriptVoice,
    /// Static prompts with no audio yet (not cached, or no recording).
    pub missing: Vec<String>,
    /// Parse warnings, as `file:line:col: message`.
    pub warnings: Vec<String>,
}

/// What every script of a folder shares when it is loaded.
pub struct LoadOptions {
    /// The prompt cache.
    pub cache: PromptCache,
    /// Variables every call gets unless it gives its own.
    pub defaults: HashMap<String, String>,
    /// The language model's pipeline, when one is configured.
    pub conversation: Option<Arc<ConversationDeps>>,
}

/// Loads `file` for calls, speaking with `voice`: static prompts come from the prompt cache
/// (a synthesizer's voice) or from the recordings (recorded prompts, whose demo variables
/// become defaults under `options.defaults`).
pub fn load_script(
    file: ScriptFile,
    voice: ScriptVoice,
    options: &LoadOptions,
) -> Result<Loaded, LoadError> {
    let warnings = file.warnings();
    let flow = file.parsed.flow;
    let texts = distinct_texts(&flow);
    let mut defaults = HashMap::new();
    let prompts = match &voice {
        ScriptVoice::Synth { provider, key } => {
            let prompts = ScriptPrompts::new(
                key.clone(),
                texts,
                Some(provider.clone()),
                Some(options.cache.clone()),
            );
            prompts.load_from_disk()?;
            prompts
        }
        ScriptVoice::Recorded(recorded) => {
            defaults.extend(
                DEMO_VARIABLES
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            let prompts = ScriptPrompts::new(
                FIXTURE_VOICE,
                texts.iter().cloned(),
                Some(Arc::new(recorded.clone())),
                None,
            );
            for text in &texts {
                if let Some(clip) = recorded.clip(text) {
                    prompts.insert_static(text, clip);
                }
            }
            prompts
        }
    };
    defaults.extend(options.defaults.clone());
    let missing = prompts.missing();
    let script = LoadedScript {
        name: file.name,
        flow: Arc::new(flow),
        hash: file.hash,
        prompts: Arc::new(prompts.clone()) as Arc<dyn PromptSource>,
        conversation: options.conversation.clone(),
        defaults,
    };
    Ok(Loaded {
        script,
        prompts,
        voice,
        missing,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::synth::test_voice::TestTts;

    const SCRIPT: &str = "[start]\nHello {{ name | there }}.\nreprompt: Press 1.\n-> 1: done\n\n[done]\nBye.\n-> END\n";

    fn options(dir: &Path) -> LoadOptions {
        LoadOptions {
            cache: PromptCache::new(dir.join("cache")),
            defaults: HashMap::from([("tenantName".to_owned(), "Mine".to_owned())]),
            conversation: None,
        }
    }

    #[test]
    fn lists_dsc_files_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.dsc", "a.dsc", "notes.txt"] {
            std::fs::write(dir.path().join(name), SCRIPT).unwrap();
        }
        std::fs::create_dir(dir.path().join("folder.dsc")).unwrap();
        let files = script_files(dir.path()).unwrap();
        let names: Vec<_> = files.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(names, ["a.dsc", "b.dsc"]);
        let err = script_files(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("scripts folder") && err.contains("none"),
            "{err}"
        );
    }

    #[test]
    fn parse_errors_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.dsc");
        std::fs::write(
            &path,
            "[start]\nHi.\n-> confirmd\n\n[confirmed]\nOk.\n-> END\n",
        )
        .unwrap();
        let err = read_script(&path).unwrap_err().to_string();
        let expected = format!("{}:3:4: unknown node `confirmd`", path.display());
        assert!(err.starts_with(&expected), "{err}");

        let bad_name = dir.path().join("two words.dsc");
        std::fs::write(&bad_name, SCRIPT).unwrap();
        assert!(matches!(
            read_script(&bad_name),
            Err(LoadError::Name { .. })
        ));

        let binary = dir.path().join("binary.dsc");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        let err = read_script(&binary).unwrap_err().to_string();
        assert!(err.contains("binary.dsc") && err.contains("UTF-8"), "{err}");

        let err = read_script(&dir.path().join("gone.dsc"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gone.dsc"), "{err}");
    }

    #[test]
    fn loads_cached_prompts_and_lists_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("greet.dsc");
        std::fs::write(&path, SCRIPT).unwrap();
        let opts = options(dir.path());
        opts.cache
            .write_clip("test/v", "Press 1.", &[7; 80])
            .unwrap();
        let file = read_script(&path).unwrap();
        assert_eq!(file.name, "greet");
        let hash = file.hash.clone();
        let voice = ScriptVoice::Synth {
            provider: Arc::new(TestTts::default()),
            key: "test/v".into(),
        };
        let loaded = load_script(file, voice, &opts).unwrap();
        assert_eq!(loaded.script.name, "greet");
        assert_eq!(loaded.script.hash, hash);
        assert_eq!(loaded.script.defaults["tenantName"], "Mine");
        assert_eq!(loaded.script.prompts.cached("Press 1.").unwrap().len(), 80);
        assert_eq!(
            loaded.missing,
            vec![
                "Bye.".to_owned(),
                "Sorry, I couldn't understand. Goodbye.".to_owned()
            ]
        );
    }

    #[test]
    fn recorded_prompts_fill_statics_and_bring_the_demo_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("greet.dsc");
        std::fs::write(&path, SCRIPT).unwrap();
        let rec = dir.path().join("rec");
        std::fs::create_dir(&rec).unwrap();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(rec.join("bye.wav"), spec).unwrap();
        for _ in 0..160 {
            w.write_sample(3i16).unwrap();
        }
        w.finalize().unwrap();
        std::fs::write(rec.join("prompts.tsv"), "bye.wav\tBye.\n").unwrap();
        let voice = ScriptVoice::Recorded(FixtureVoice::load(&rec).unwrap());
        assert_eq!(voice.key(), "fixtures");
        let loaded = load_script(read_script(&path).unwrap(), voice, &options(dir.path())).unwrap();
        assert_eq!(loaded.script.prompts.cached("Bye.").unwrap().len(), 160);
        assert_eq!(loaded.missing.len(), 2);
        assert_eq!(loaded.script.defaults["appointmentDate"], "Tuesday at 3 PM");
        assert_eq!(
            loaded.script.defaults["tenantName"], "Mine",
            "configured variables win over the demo ones"
        );
        assert!(
            !dir.path().join("cache").exists(),
            "recordings are not copied"
        );
    }
}
