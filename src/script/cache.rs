//! The prompt cache on disk: pre-synthesized prompt audio, keyed by voice and text, and one
//! manifest per script.
//!
//! ```text
//! <cache_dir>/audio/<sha256(voice NUL text)>.ulaw    μ-law 8 kHz, raw, one per (voice, text)
//! <cache_dir>/scripts/<script hash>.json             node → [{kind, text, file}]
//! ```
//!
//! Audio files are written atomically (a temporary file in the same folder, then a rename),
//! so a reader never sees half a clip and an interrupted prime leaves nothing behind. Because
//! audio is keyed by voice and text, a changed script re-synthesizes only the texts that
//! changed. A manifest is written only once every clip of the script is in the cache, so its
//! presence means the script is fully primed.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::flow::Flow;
use super::prompts::{PROMPT_RATE, PromptClip};
use super::spoken::{PromptKind, spoken_texts};
use super::synth::{SYNTH_TIMEOUT, SynthError, synthesize_clip};
use crate::audio::g711;
use crate::tts::{TtsProvider, TtsVoice};

/// Prompts synthesized at once by [`PromptCache::prime`].
pub const PRIME_CONCURRENCY: usize = 4;
/// Folder of the audio files, under the cache root.
const AUDIO_DIR: &str = "audio";
/// Folder of the manifests, under the cache root.
const SCRIPTS_DIR: &str = "scripts";
/// Extension of the audio files.
const AUDIO_EXT: &str = "ulaw";

/// Tells temporary files of one process apart.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A prompt cache operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing a file failed.
    #[error("prompt cache: {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A manifest is not valid JSON of the expected shape.
    #[error("prompt cache: manifest {path}: {message}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CacheError {
    let path = path.to_path_buf();
    move |source| CacheError::Io {
        action,
        path,
        source,
    }
}

/// A script's manifest: which cached file holds each of its prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The script's hash.
    pub script: String,
    /// The voice the clips were synthesized with.
    pub voice: String,
    /// Node name → its prompts without variables.
    pub nodes: BTreeMap<String, Vec<ManifestEntry>>,
    /// Flow-wide prompts (the `@goodbye`), when they have no variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flow: Vec<ManifestEntry>,
}

/// One prompt of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// Prompt, reprompt or goodbye.
    pub kind: PromptKind,
    /// The text.
    pub text: String,
    /// The audio file, relative to the cache root (`audio/<key>.ulaw`).
    pub file: String,
}

/// How one distinct text of a script fared in [`PromptCache::prime`].
#[derive(Debug, Clone, PartialEq)]
pub enum PrimeOutcome {
    /// It was already in the cache.
    Cached,
    /// It was synthesized and written.
    Synthesized {
        /// From the request to the file written.
        took: Duration,
        /// From the request to the first audio byte, when the provider reports it.
        first_byte: Option<Duration>,
        /// Length of the clip.
        audio: Duration,
    },
    /// It could not be synthesized or written; nothing was written for it.
    Failed {
        /// Time spent on it.
        took: Duration,
        /// Why.
        error: String,
    },
}

/// One distinct text of a script, and what priming it did.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimedPrompt {
    /// The text.
    pub text: String,
    /// Where the script uses it: (node, or `None` for the flow's `@goodbye`; kind).
    pub used_by: Vec<(Option<String>, PromptKind)>,
    /// Its audio file.
    pub file: PathBuf,
    /// What happened.
    pub outcome: PrimeOutcome,
}

/// What [`PromptCache::prime`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimeReport {
    /// The script's hash.
    pub script: String,
    /// The voice.
    pub voice: String,
    /// Every distinct text without variables, in first-use order.
    pub prompts: Vec<PrimedPrompt>,
    /// Wall time of the whole prime.
    pub elapsed: Duration,
    /// The manifest, written when no prompt failed.
    pub manifest: Option<PathBuf>,
}

impl PrimeReport {
    fn count(&self, pick: impl Fn(&PrimeOutcome) -> bool) -> usize {
        self.prompts.iter().filter(|p| pick(&p.outcome)).count()
    }

    /// Texts synthesized now.
    pub fn synthesized(&self) -> usize {
        self.count(|o| matches!(o, PrimeOutcome::Synthesized { .. }))
    }

    /// Texts that were already cached.
    pub fn cached(&self) -> usize {
        self.count(|o| matches!(o, PrimeOutcome::Cached))
    }

    /// Texts that failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, PrimeOutcome::Failed { .. }))
    }

    /// Whether every text is now in the cache.
    pub fn complete(&self) -> bool {
        self.failed() == 0
    }
}

/// Milliseconds or seconds, for reports.
fn duration_text(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

impl std::fmt::Display for PrimedPrompt {
    /// One line: outcome, timing, where it is used, the text (and the error).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used: Vec<String> = self
            .used_by
            .iter()
            .map(|(node, kind)| match node {
                Some(node) => format!("{node}/{}", kind.as_str()),
                None => "@goodbye".to_owned(),
            })
            .collect();
        let text = crate::tts::clip(&self.text, 60);
        match &self.outcome {
            PrimeOutcome::Cached => {
                write!(f, "cached       {:>9}  {}  {text:?}", "", used.join(", "))
            }
            PrimeOutcome::Synthesized {
                took,
                first_byte,
                audio,
            } => {
                write!(
                    f,
                    "synthesized  {:>9}  {}  {text:?}  ({} of audio",
                    duration_text(*took),
                    used.join(", "),
                    duration_text(*audio)
                )?;
                if let Some(first) = first_byte {
                    write!(f, ", first byte after {}", duration_text(*first))?;
                }
                write!(f, ")")
            }
            PrimeOutcome::Failed { took, error } => write!(
                f,
                "failed       {:>9}  {}  {text:?}: {error}",
                duration_text(*took),
                used.join(", ")
            ),
        }
    }
}

impl std::fmt::Display for PrimeReport {
    /// One line per prompt, then the totals and the manifest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for prompt in &self.prompts {
            writeln!(f, "  {prompt}")?;
        }
        writeln!(
            f,
            "{} prompts: {} synthesized, {} cached, {} failed in {}",
            self.prompts.len(),
            self.synthesized(),
            self.cached(),
            self.failed(),
            duration_text(self.elapsed)
        )?;
        match &self.manifest {
            Some(path) => write!(f, "manifest: {}", path.display()),
            None => write!(
                f,
                "no manifest written: prime again once the failures are fixed"
            ),
        }
    }
}

/// A prompt cache rooted at one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptCache {
    root: PathBuf,
}

impl PromptCache {
    /// The cache under `root` (created when something is first written).
    pub fn new(root: impl Into<PathBuf>) -> PromptCache {
        PromptCache { root: root.into() }
    }

    /// The cache's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cache key of `text` spoken by `voice`: hex SHA-256 of `voice`, a NUL byte, `text`.
    pub fn clip_key(voice: &str, text: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(voice.as_bytes());
        hasher.update([0u8]);
        hasher.update(text.as_bytes());
        hex::encode(hasher.finalize())
    }

    /// The audio file's path relative to the root (`audio/<key>.ulaw`).
    pub fn clip_file(voice: &str, text: &str) -> String {
        format!(
            "{AUDIO_DIR}/{}.{AUDIO_EXT}",
            PromptCache::clip_key(voice, text)
        )
    }

    /// Where the audio of `text` in `voice` is kept.
    pub fn clip_path(&self, voice: &str, text: &str) -> PathBuf {
        self.root.join(PromptCache::clip_file(voice, text))
    }

    /// Where the manifest of the script with hash `script` is kept.
    pub fn manifest_path(&self, script: &str) -> PathBuf {
        self.root.join(SCRIPTS_DIR).join(format!("{script}.json"))
    }

    /// Whether the audio of `text` in `voice` is cached (a non-empty file).
    pub fn has_clip(&self, voice: &str, text: &str) -> bool {
        std::fs::metadata(self.clip_path(voice, text)).is_ok_and(|m| m.is_file() && m.len() > 0)
    }

    /// The cached audio of `text` in `voice`, decoded to PCM; `None` when it is not cached.
    pub fn read_clip(&self, voice: &str, text: &str) -> Result<Option<PromptClip>, CacheError> {
        let path = self.clip_path(voice, text);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        if bytes.is_empty() {
            return Ok(None);
        }
        let mut pcm = Vec::with_capacity(bytes.len());
        g711::decode_mulaw_into(&bytes, &mut pcm);
        Ok(Some(PromptClip::from(pcm)))
    }

    /// Stores `pcm` (8 kHz) as the audio of `text` in `voice`, atomically; returns the file.
    pub fn write_clip(&self, voice: &str, text: &str, pcm: &[i16]) -> Result<PathBuf, CacheError> {
        let mut bytes = Vec::with_capacity(pcm.len());
        g711::encode_mulaw_into(pcm, &mut bytes);
        let path = self.clip_path(voice, text);
        write_atomic(&path, &bytes)?;
        Ok(path)
    }

    /// The manifest of `flow` (hash `script`) in `voice`: every prompt without variables.
    pub fn manifest(flow: &Flow, script: &str, voice: &str) -> Manifest {
        let mut manifest = Manifest {
            script: script.to_owned(),
            voice: voice.to_owned(),
            nodes: BTreeMap::new(),
            flow: Vec::new(),
        };
        for item in spoken_texts(flow) {
            let entry = ManifestEntry {
                kind: item.kind,
                file: PromptCache::clip_file(voice, &item.text),
                text: item.text,
            };
            match item.node {
                Some(node) => manifest.nodes.entry(node).or_default().push(entry),
                None => manifest.flow.push(entry),
            }
        }
        manifest
    }

    /// The manifest of the script with hash `script`, if it has been written.
    pub fn read_manifest(&self, script: &str) -> Result<Option<Manifest>, CacheError> {
        let path = self.manifest_path(script);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| CacheError::Manifest {
                path,
                message: e.to_string(),
            })
    }

    /// Writes `manifest` (atomically) and returns its path.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<PathBuf, CacheError> {
        let path = self.manifest_path(&manifest.script);
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| CacheError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &json)?;
        Ok(path)
    }

    /// Synthesizes every prompt of `flow` (hash `script`) that has no variables and is not
    /// cached yet, with `tts` at 8 kHz, [`PRIME_CONCURRENCY`] at a time, and writes them as
    /// `voice`. Failed prompts are reported, not written; the manifest is written when none
    /// failed. An error is returned only when the cache folders cannot be made.
    pub async fn prime(
        &self,
        flow: &Flow,
        script: &str,
        tts: &dyn TtsProvider,
        voice: &str,
    ) -> Result<PrimeReport, CacheError> {
        let started = Instant::now();
        for dir in [AUDIO_DIR, SCRIPTS_DIR] {
            let path = self.root.join(dir);
            std::fs::create_dir_all(&path).map_err(io_error("create", &path))?;
        }
        let mut prompts: Vec<PrimedPrompt> = Vec::new();
        for item in spoken_texts(flow) {
            let text = item.text;
            let used = (item.node, item.kind);
            if let Some(known) = prompts.iter_mut().find(|p| p.text == text) {
                known.used_by.push(used);
                continue;
            }
            prompts.push(PrimedPrompt {
                file: self.clip_path(voice, &text),
                used_by: vec![used],
                outcome: PrimeOutcome::Cached,
                text,
            });
        }
        let pending: VecDeque<(usize, String)> = prompts
            .iter()
            .enumerate()
            .filter(|(_, p)| !self.has_clip(voice, &p.text))
            .map(|(i, p)| (i, p.text.clone()))
            .collect();
        let workers = pending.len().min(PRIME_CONCURRENCY);
        let queue = Mutex::new(pending);
        let runs = (0..workers).map(|_| self.prime_worker(&queue, tts, voice));
        for (index, outcome) in futures::future::join_all(runs).await.into_iter().flatten() {
            if let Some(prompt) = prompts.get_mut(index) {
                prompt.outcome = outcome;
            }
        }
        let mut report = PrimeReport {
            script: script.to_owned(),
            voice: voice.to_owned(),
            prompts,
            elapsed: Duration::ZERO,
            manifest: None,
        };
        if report.complete() {
            report.manifest =
                Some(self.write_manifest(&PromptCache::manifest(flow, script, voice))?);
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Takes texts from `queue` until it is empty, synthesizing each with one voice (a new one
    /// after a time-out, which may leave the old one mid-segment).
    async fn prime_worker(
        &self,
        queue: &Mutex<VecDeque<(usize, String)>>,
        tts: &dyn TtsProvider,
        voice_name: &str,
    ) -> Vec<(usize, PrimeOutcome)> {
        let mut done = Vec::new();
        let mut voice: Option<Box<dyn TtsVoice>> = None;
        loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            let Some((index, text)) = next else {
                break;
            };
            let started = Instant::now();
            let current = voice.get_or_insert_with(|| tts.voice(PROMPT_RATE));
            let outcome = match synthesize_clip(current.as_mut(), &text, SYNTH_TIMEOUT).await {
                Ok(clip) => {
                    let cache = self.clone();
                    let (name, words, pcm) = (voice_name.to_owned(), text.clone(), clip.pcm);
                    let samples = pcm.len();
                    let written =
                        tokio::task::spawn_blocking(move || cache.write_clip(&name, &words, &pcm))
                            .await;
                    match written {
                        Ok(Ok(_)) => PrimeOutcome::Synthesized {
                            took: started.elapsed(),
                            first_byte: clip.stats.first_byte,
                            audio: Duration::from_millis(
                                (samples as u64 * 1000) / u64::from(PROMPT_RATE),
                            ),
                        },
                        Ok(Err(error)) => PrimeOutcome::Failed {
                            took: started.elapsed(),
                            error: error.to_string(),
                        },
                        Err(join) => PrimeOutcome::Failed {
                            took: started.elapsed(),
                            error: format!("writing the clip stopped: {join}"),
                        },
                    }
                }
                Err(error) => {
                    if matches!(error, SynthError::TimedOut { .. })
                        && let Some(mut stale) = voice.take()
                    {
                        let _ = tokio::time::timeout(Duration::from_secs(2), stale.close()).await;
                    }
                    PrimeOutcome::Failed {
                        took: started.elapsed(),
                        error: error.to_string(),
                    }
                }
            };
            done.push((index, outcome));
        }
        if let Some(mut voice) = voice {
            let _ = tokio::time::timeout(Duration::from_secs(2), voice.close()).await;
        }
        done
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so the
/// file is either absent or whole.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&temp).map_err(io_error("create", &temp))?;
        file.write_all(bytes).map_err(io_error("write", &temp))?;
        file.sync_all().map_err(io_error("write", &temp))?;
        std::fs::rename(&temp, path).map_err(io_error("rename", path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::script::flow::{
        Node, Settings, Target, Template, TemplatePart, Transition, Trigger,
    };
    use crate::script::synth::test_voice::TestTts;

    fn node(name: &str, prompt: &str, reprompt: Option<&str>) -> Node {
        Node {
            name: name.into(),
            prompt: Some(Template::text(prompt)),
            reprompt: reprompt.map(Template::text),
            agent: None,
            transitions: vec![Transition {
                trigger: Trigger::Always,
                target: Target::End,
            }],
        }
    }

    fn flow() -> Flow {
        let mut greet = node("start", "unused", Some("Press 1 or 2."));
        greet.prompt = Some(Template {
            parts: vec![
                TemplatePart::Text("Hi ".into()),
                TemplatePart::Var {
                    name: "firstName".into(),
                    fallback: Some("there".into()),
                },
            ],
        });
        Flow {
            settings: Settings::default(),
            nodes: vec![
                greet,
                node("confirmed", "You're all set. Goodbye!", None),
                node("again", "Press 1 or 2.", Some("Still there?")),
            ],
        }
    }

    #[test]
    fn clip_keys_are_sha256_of_voice_nul_text() {
        // printf 'v\0hello' | sha256sum
        assert_eq!(
            PromptCache::clip_key("v", "hello"),
            "a41153ea9e8e1f7514fe7a6b327136c88f18ecd8206d639a5d67dd0397461261"
        );
        assert_ne!(
            PromptCache::clip_key("a", "bc"),
            PromptCache::clip_key("ab", "c")
        );
        assert_ne!(
            PromptCache::clip_key("v", "hello"),
            PromptCache::clip_key("w", "hello")
        );
        assert_eq!(PromptCache::clip_key("v", "x").len(), 64);
        assert_eq!(
            PromptCache::clip_file("v", "x"),
            format!("audio/{}.ulaw", PromptCache::clip_key("v", "x"))
        );
    }

    #[test]
    fn clips_round_trip_through_mulaw_and_missing_ones_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PromptCache::new(dir.path());
        assert_eq!(cache.read_clip("v", "hi").unwrap(), None);
        assert!(!cache.has_clip("v", "hi"));
        let pcm: Vec<i16> = (0..800).map(|i| ((i * 37) % 2000 - 1000) as i16).collect();
        let path = cache.write_clip("v", "hi", &pcm).unwrap();
        assert_eq!(path, cache.clip_path("v", "hi"));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 800);
        let back = cache.read_clip("v", "hi").unwrap().unwrap();
        let mut expected = Vec::new();
        let mut ulaw = Vec::new();
        g711::encode_mulaw_into(&pcm, &mut ulaw);
        g711::decode_mulaw_into(&ulaw, &mut expected);
        assert_eq!(&back[..], &expected[..]);
        assert!(cache.has_clip("v", "hi"));
        assert!(!cache.has_clip("w", "hi"));
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn manifests_list_static_prompts_per_node_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PromptCache::new(dir.path());
        let manifest = PromptCache::manifest(&flow(), "abc", "v");
        let start = &manifest.nodes["start"];
        assert_eq!(start.len(), 1, "the prompt with a variable is left out");
        assert_eq!(start[0].kind, PromptKind::Reprompt);
        assert_eq!(start[0].text, "Press 1 or 2.");
        assert_eq!(start[0].file, PromptCache::clip_file("v", "Press 1 or 2."));
        assert_eq!(manifest.nodes["again"].len(), 2);
        assert_eq!(manifest.flow.len(), 1);
        assert_eq!(manifest.flow[0].kind, PromptKind::Goodbye);
        assert_eq!(cache.read_manifest("abc").unwrap(), None);
        let path = cache.write_manifest(&manifest).unwrap();
        assert_eq!(path, dir.path().join("scripts/abc.json"));
        assert_eq!(cache.read_manifest("abc").unwrap(), Some(manifest));
        std::fs::write(&path, "{").unwrap();
        let err = cache.read_manifest("abc").unwrap_err().to_string();
        assert!(err.contains("abc.json"), "{err}");
    }

    #[tokio::test]
    async fn prime_synthesizes_each_distinct_static_text_once_then_skips() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PromptCache::new(dir.path().join("cache"));
        let tts = TestTts::default();
        let report = cache.prime(&flow(), "h1", &tts, "v").await.unwrap();
        // "Press 1 or 2." (twice), "You're all set. Goodbye!", "Still there?", the goodbye.
        assert_eq!(report.prompts.len(), 4);
        assert_eq!(
            (report.synthesized(), report.cached(), report.failed()),
            (4, 0, 0)
        );
        let shared = report
            .prompts
            .iter()
            .find(|p| p.text == "Press 1 or 2.")
            .unwrap();
        assert_eq!(shared.used_by.len(), 2);
        let mut asked = tts.requests();
        asked.sort();
        let mut expected: Vec<String> = report.prompts.iter().map(|p| p.text.clone()).collect();
        expected.sort();
        assert_eq!(asked, expected);
        for prompt in &report.prompts {
            let pcm = cache.read_clip("v", &prompt.text).unwrap().unwrap();
            assert_eq!(pcm.len(), TestTts::pcm(&prompt.text).len());
            assert!(prompt.file.exists());
        }
        assert_eq!(report.manifest, Some(cache.manifest_path("h1")));
        assert!(cache.read_manifest("h1").unwrap().is_some());

        let again = cache.prime(&flow(), "h1", &tts, "v").await.unwrap();
        assert_eq!((again.synthesized(), again.cached()), (0, 4));
        assert_eq!(tts.requests().len(), 4, "nothing synthesized twice");
        assert_eq!(tts.voices.load(Ordering::SeqCst), 4);
        assert_eq!(tts.closes.load(Ordering::SeqCst), 4, "every voice closed");

        // Another voice is another set of clips.
        let other = cache.prime(&flow(), "h1", &tts, "w").await.unwrap();
        assert_eq!(other.synthesized(), 4);
    }

    #[tokio::test]
    async fn prime_runs_at_most_four_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PromptCache::new(dir.path());
        let mut f = flow();
        for i in 0..10 {
            f.nodes
                .push(node(&format!("n{i}"), &format!("Text number {i}."), None));
        }
        let tts = TestTts::with_delay(Duration::from_millis(40));
        let report = cache.prime(&f, "h", &tts, "v").await.unwrap();
        assert_eq!(report.synthesized(), 14);
        assert_eq!(tts.max_active.load(Ordering::SeqCst), PRIME_CONCURRENCY);
        assert!(
            report.elapsed < Duration::from_millis(40 * 14),
            "concurrent: {:?}",
            report.elapsed
        );
    }

    #[tokio::test]
    async fn failures_are_reported_and_leave_no_file_and_no_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PromptCache::new(dir.path());
        let tts = TestTts::default();
        tts.fail_on("Still there?");
        let report = cache.prime(&flow(), "h", &tts, "v").await.unwrap();
        assert_eq!((report.synthesized(), report.failed()), (3, 1));
        let failed = report
            .prompts
            .iter()
            .find(|p| matches!(p.outcome, PrimeOutcome::Failed { .. }))
            .unwrap();
        assert_eq!(failed.text, "Still there?");
        let PrimeOutcome::Failed { error, .. } = &failed.outcome else {
            unreachable!()
        };
        assert!(error.contains("refused"), "{error}");
        assert!(!failed.file.exists());
        assert!(!report.complete());
        assert_eq!(report.manifest, None);
        assert!(!cache.manifest_path("h").exists());
        let audio: Vec<_> = std::fs::read_dir(dir.path().join("audio"))
            .unwrap()
            .collect();
        assert_eq!(audio.len(), 3, "only whole clips, no temporary files");

        // Once the synthesizer works again, only the missing text is synthesized.
        tts.fail.lock().unwrap().clear();
        let before = tts.requests().len();
        let again = cache.prime(&flow(), "h", &tts, "v").await.unwrap();
        assert_eq!((again.synthesized(), again.cached()), (1, 3));
        assert_eq!(tts.requests()[before..], ["Still there?".to_owned()]);
        assert!(again.manifest.is_some());
    }

    #[tokio::test]
    async fn reports_print_one_line_per_prompt_and_the_totals() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PromptCache::new(dir.path());
        let tts = TestTts::default();
        tts.fail_on("Still there?");
        let report = cache.prime(&flow(), "h", &tts, "v").await.unwrap();
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(
            lines
                .iter()
                .any(|l| l.trim_start().starts_with("synthesized")
                    && l.contains("start/reprompt, again/prompt")
                    && l.contains("\"Press 1 or 2.\"")),
            "{text}"
        );
        assert!(
            lines.iter().any(|l| l.trim_start().starts_with("failed")
                && l.contains("again/reprompt")
                && l.contains("refused")),
            "{text}"
        );
        assert!(lines.iter().any(|l| l.contains("@goodbye")), "{text}");
        assert!(
            lines[4].starts_with("4 prompts: 3 synthesized, 0 cached, 1 failed in "),
            "{text}"
        );
        assert!(lines[5].starts_with("no manifest"), "{text}");
        tts.fail.lock().unwrap().clear();
        let text = cache
            .prime(&flow(), "h", &tts, "v")
            .await
            .unwrap()
            .to_string();
        assert!(text.contains("1 synthesized, 3 cached, 0 failed"), "{text}");
        assert!(
            text.contains("manifest: ") && text.contains("h.json"),
            "{text}"
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.trim_start().starts_with("cached"))
                .count(),
            3
        );
    }

    #[tokio::test]
    async fn an_unwritable_cache_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let cache = PromptCache::new(blocker.join("cache"));
        let err = cache
            .prime(&flow(), "h", &TestTts::default(), "v")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("prompt cache") && err.contains("file"),
            "{err}"
        );
    }
}
