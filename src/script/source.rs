//! [`ScriptPrompts`]: one script's prompt audio in memory, the [`PromptSource`] its calls use.
//!
//! The script's texts without variables are loaded from the prompt cache when the script is
//! loaded (decoded to PCM once) and stay in memory; texts rendered per call (with a caller's
//! name, a date) are synthesized on demand and kept in a bounded most-recently-used store.
//! [`PromptSource::cached`] is a concurrent hash-map lookup: no I/O, no await, no lock shared
//! with other calls. Concurrent requests for the same missing text share one synthesis, which
//! runs in its own task, so it completes (and is kept) even if the call that asked hangs up.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};

use super::cache::{CacheError, PromptCache};
use super::prompts::{PROMPT_RATE, PromptClip, PromptError, PromptSource};
use super::synth::{SYNTH_TIMEOUT, synthesize_clip};
use crate::tts::TtsProvider;

/// Per-call prompt audio kept in memory by default: 30 minutes (at 8 kHz).
pub const DEFAULT_DYNAMIC_LIMIT_SAMPLES: usize = 30 * 60 * PROMPT_RATE as usize;
/// Missing texts synthesized at once by [`ScriptPrompts::fill_missing`].
const FILL_CONCURRENCY: usize = 4;

type Pending = Shared<BoxFuture<'static, Result<PromptClip, PromptError>>>;

/// A per-call clip and when it was last asked for.
struct Recent {
    clip: PromptClip,
    used: AtomicU64,
}

struct Inner {
    voice: String,
    tts: Option<Arc<dyn TtsProvider>>,
    disk: Option<PromptCache>,
    /// The script's texts without variables (kept for good, and written to the disk cache).
    static_texts: HashSet<String>,
    statics: DashMap<String, PromptClip>,
    dynamic: DashMap<String, Recent>,
    dynamic_samples: AtomicUsize,
    dynamic_limit: AtomicUsize,
    clock: AtomicU64,
    inflight: Mutex<HashMap<String, Pending>>,
    synth_timeout: Duration,
}

/// What [`ScriptPrompts::fill_missing`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FillReport {
    /// Texts synthesized.
    pub synthesized: usize,
    /// Texts that failed, with why.
    pub failed: Vec<(String, PromptError)>,
}

/// One script's prompt audio in one voice (cheap to clone; clones share the audio).
#[derive(Clone)]
pub struct ScriptPrompts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ScriptPrompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptPrompts")
            .field("voice", &self.inner.voice)
            .field("statics", &self.inner.statics.len())
            .field("static_texts", &self.inner.static_texts.len())
            .field("dynamic", &self.inner.dynamic.len())
            .field("tts", &self.inner.tts.as_ref().map(|t| t.name()))
            .finish_non_exhaustive()
    }
}

impl ScriptPrompts {
    /// Prompt audio in `voice` for a script whose texts without variables are `static_texts`.
    /// `tts` synthesizes what is missing (none: only what is loaded or inserted is served);
    /// `disk` keeps static texts synthesized later (none: memory only).
    pub fn new(
        voice: impl Into<String>,
        static_texts: impl IntoIterator<Item = String>,
        tts: Option<Arc<dyn TtsProvider>>,
        disk: Option<PromptCache>,
    ) -> ScriptPrompts {
        ScriptPrompts {
            inner: Arc::new(Inner {
                voice: voice.into(),
                tts,
                disk,
                static_texts: static_texts.into_iter().collect(),
                statics: DashMap::new(),
                dynamic: DashMap::new(),
                dynamic_samples: AtomicUsize::new(0),
                dynamic_limit: AtomicUsize::new(DEFAULT_DYNAMIC_LIMIT_SAMPLES),
                clock: AtomicU64::new(0),
                inflight: Mutex::new(HashMap::new()),
                synth_timeout: SYNTH_TIMEOUT,
            }),
        }
    }

    /// The voice (part of the cache key).
    pub fn voice(&self) -> &str {
        &self.inner.voice
    }

    /// Caps the per-call audio kept in memory (samples); the least recently used goes first.
    pub fn set_dynamic_limit(&self, samples: usize) {
        self.inner.dynamic_limit.store(samples, Ordering::Relaxed);
        self.inner.evict();
    }

    /// Per-call audio kept now (samples).
    pub fn dynamic_samples(&self) -> usize {
        self.inner.dynamic_samples.load(Ordering::Relaxed)
    }

    /// Reads every static text's clip from the disk cache into memory (blocking file reads:
    /// call it at load, not on a call's path). Returns the texts not cached.
    pub fn load_from_disk(&self) -> Result<Vec<String>, CacheError> {
        if let Some(disk) = &self.inner.disk {
            for text in &self.inner.static_texts {
                if self.inner.statics.contains_key(text) {
                    continue;
                }
                if let Some(clip) = disk.read_clip(&self.inner.voice, text)? {
                    self.inner.statics.insert(text.clone(), clip);
                }
            }
        }
        Ok(self.missing())
    }

    /// Puts a clip for a static text in memory (e.g. from recorded prompts).
    pub fn insert_static(&self, text: &str, clip: PromptClip) {
        self.inner.statics.insert(text.to_owned(), clip);
    }

    /// The static texts with no audio in memory yet, sorted.
    pub fn missing(&self) -> Vec<String> {
        let mut missing: Vec<String> = self
            .inner
            .static_texts
            .iter()
            .filter(|t| !self.inner.statics.contains_key(*t))
            .cloned()
            .collect();
        missing.sort();
        missing
    }

    /// Synthesizes every missing static text (a few at a time), keeping each in memory and in
    /// the disk cache.
    pub async fn fill_missing(&self) -> FillReport {
        let results: Vec<(String, Result<PromptClip, PromptError>)> =
            futures::stream::iter(self.missing())
                .map(|text| async move {
                    let result = self.synthesize(&text).await;
                    (text, result)
                })
                .buffer_unordered(FILL_CONCURRENCY)
                .collect()
                .await;
        let mut report = FillReport::default();
        for (text, result) in results {
            match result {
                Ok(_) => report.synthesized += 1,
                Err(error) => report.failed.push((text, error)),
            }
        }
        report.failed.sort_by(|a, b| a.0.cmp(&b.0));
        report
    }
}

impl Inner {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    fn lookup(&self, text: &str) -> Option<PromptClip> {
        if let Some(clip) = self.statics.get(text) {
            return Some(clip.clone());
        }
        let recent = self.dynamic.get(text)?;
        recent.used.store(self.tick(), Ordering::Relaxed);
        Some(recent.clip.clone())
    }

    fn keep(&self, text: &str, clip: &PromptClip) {
        if self.static_texts.contains(text) {
            self.statics.insert(text.to_owned(), clip.clone());
            return;
        }
        if clip.len() > self.dynamic_limit.load(Ordering::Relaxed) {
            return;
        }
        let recent = Recent {
            clip: clip.clone(),
            used: AtomicU64::new(self.tick()),
        };
        if let Some(old) = self.dynamic.insert(text.to_owned(), recent) {
            self.dynamic_samples
                .fetch_sub(old.clip.len(), Ordering::Relaxed);
        }
        self.dynamic_samples
            .fetch_add(clip.len(), Ordering::Relaxed);
        self.evict();
    }

    /// Drops the least recently used per-call clips until the total fits the limit.
    fn evict(&self) {
        let limit = self.dynamic_limit.load(Ordering::Relaxed);
        while self.dynamic_samples.load(Ordering::Relaxed) > limit {
            let oldest = self
                .dynamic
                .iter()
                .min_by_key(|entry| entry.value().used.load(Ordering::Relaxed))
                .map(|entry| entry.key().clone());
            let Some(oldest) = oldest else {
                break;
            };
            if let Some((_, gone)) = self.dynamic.remove(&oldest) {
                self.dynamic_samples
                    .fetch_sub(gone.clip.len(), Ordering::Relaxed);
            }
        }
    }

    fn finish(&self, text: &str) {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(text);
    }

    /// Synthesizes `text`, keeps it, and writes a static text to the disk cache.
    async fn make(self: Arc<Self>, text: String) -> Result<PromptClip, PromptError> {
        let Some(tts) = self.tts.clone() else {
            self.finish(&text);
            return Err(PromptError::NotPrepared { text });
        };
        let mut voice = tts.voice(PROMPT_RATE);
        let result = synthesize_clip(voice.as_mut(), &text, self.synth_timeout).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), voice.close()).await;
        let clip = match result {
            Ok(done) => PromptClip::from(done.pcm),
            Err(error) => {
                self.finish(&text);
                tracing::warn!(voice = %self.voice, %error, "prompt not synthesized");
                return Err(PromptError::Synthesis(error.to_string()));
            }
        };
        self.keep(&text, &clip);
        self.finish(&text);
        if self.static_texts.contains(&text)
            && let Some(disk) = self.disk.clone()
        {
            let (voice, words, pcm) = (self.voice.clone(), text.clone(), clip.clone());
            let written =
                tokio::task::spawn_blocking(move || disk.write_clip(&voice, &words, &pcm)).await;
            match written {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "prompt not written to the cache"),
                Err(error) => tracing::warn!(%error, "prompt cache write stopped"),
            }
        }
        Ok(clip)
    }
}

#[async_trait]
impl PromptSource for ScriptPrompts {
    fn cached(&self, text: &str) -> Option<PromptClip> {
        self.inner.lookup(text)
    }

    async fn synthesize(&self, text: &str) -> Result<PromptClip, PromptError> {
        if let Some(clip) = self.inner.lookup(text) {
            return Ok(clip);
        }
        if self.inner.tts.is_none() {
            return Err(PromptError::NotPrepared {
                text: text.to_owned(),
            });
        }
        let pending = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // A synthesis that finished since the first look has kept its clip.
            if let Some(clip) = self.inner.lookup(text) {
                return Ok(clip);
            }
            match inflight.get(text) {
                Some(pending) => pending.clone(),
                None => {
                    let task = tokio::spawn(self.inner.clone().make(text.to_owned()));
                    let pending: Pending = async move {
                        match task.await {
                            Ok(result) => result,
                            Err(error) => Err(PromptError::Synthesis(format!(
                                "the synthesis task stopped: {error}"
                            ))),
                        }
                    }
                    .boxed()
                    .shared();
                    inflight.insert(text.to_owned(), pending.clone());
                    pending
                }
            }
        };
        pending.await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::script::synth::test_voice::TestTts;

    fn statics() -> Vec<String> {
        vec!["Hello.".to_owned(), "Goodbye.".to_owned()]
    }

    #[tokio::test]
    async fn loads_static_clips_from_disk_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let disk = PromptCache::new(dir.path());
        disk.write_clip("v", "Hello.", &[100; 80]).unwrap();
        let prompts = ScriptPrompts::new("v", statics(), None, Some(disk));
        assert_eq!(prompts.cached("Hello."), None, "nothing before the load");
        assert_eq!(
            prompts.load_from_disk().unwrap(),
            vec!["Goodbye.".to_owned()]
        );
        let clip = prompts.cached("Hello.").unwrap();
        assert_eq!(clip.len(), 80);
        assert!(clip.iter().all(|&s| (s - 100).abs() < 8), "μ-law decoded");
        assert_eq!(prompts.missing(), vec!["Goodbye.".to_owned()]);
        assert_eq!(
            prompts.synthesize("Goodbye.").await,
            Err(PromptError::NotPrepared {
                text: "Goodbye.".into()
            })
        );
        prompts.insert_static("Goodbye.", PromptClip::from(vec![1i16; 8]));
        assert!(prompts.missing().is_empty());
        assert_eq!(prompts.synthesize("Goodbye.").await.unwrap().len(), 8);
    }

    #[tokio::test]
    async fn synthesize_keeps_the_clip_and_writes_static_texts_to_disk_only() {
        let dir = tempfile::tempdir().unwrap();
        let disk = PromptCache::new(dir.path());
        let tts = TestTts::default();
        let prompts = ScriptPrompts::new(
            "v",
            statics(),
            Some(Arc::new(tts.clone())),
            Some(disk.clone()),
        );
        let clip = prompts.synthesize("Hello.").await.unwrap();
        assert_eq!(&clip[..], &TestTts::pcm("Hello.")[..]);
        assert_eq!(prompts.cached("Hello.").unwrap(), clip);
        assert!(disk.has_clip("v", "Hello."), "a static text goes to disk");

        let name = prompts.synthesize("Hi Ana.").await.unwrap();
        assert_eq!(prompts.cached("Hi Ana.").unwrap(), name);
        assert!(
            !disk.has_clip("v", "Hi Ana."),
            "a per-call text stays in memory"
        );
        assert_eq!(prompts.dynamic_samples(), name.len());

        prompts.synthesize("Hello.").await.unwrap();
        prompts.synthesize("Hi Ana.").await.unwrap();
        assert_eq!(
            tts.requests().len(),
            2,
            "kept texts are not synthesized again"
        );
    }

    #[tokio::test]
    async fn concurrent_requests_for_one_text_share_one_synthesis() {
        let tts = TestTts::with_delay(Duration::from_millis(50));
        let prompts = ScriptPrompts::new("v", statics(), Some(Arc::new(tts.clone())), None);
        let asks = (0..8).map(|_| prompts.synthesize("Hi Bo."));
        let clips = futures::future::join_all(asks).await;
        assert!(
            clips
                .iter()
                .all(|c| c.as_ref().unwrap()[..] == TestTts::pcm("Hi Bo.")[..])
        );
        assert_eq!(tts.requests(), vec!["Hi Bo.".to_owned()]);
        assert!(prompts.inner.inflight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_synthesis_outlives_the_call_that_asked() {
        let tts = TestTts::with_delay(Duration::from_millis(40));
        let prompts = ScriptPrompts::new("v", statics(), Some(Arc::new(tts.clone())), None);
        let gave_up =
            tokio::time::timeout(Duration::from_millis(5), prompts.synthesize("Hi Cy.")).await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(prompts.cached("Hi Cy.").is_some());
        assert_eq!(tts.requests().len(), 1);
    }

    #[tokio::test]
    async fn failures_are_errors_and_are_retried_next_time() {
        let tts = TestTts::default();
        tts.fail_on("Hi Di.");
        let prompts = ScriptPrompts::new("v", statics(), Some(Arc::new(tts.clone())), None);
        let err = prompts.synthesize("Hi Di.").await.unwrap_err();
        assert!(
            matches!(&err, PromptError::Synthesis(m) if m.contains("refused")),
            "{err}"
        );
        assert_eq!(prompts.cached("Hi Di."), None);
        tts.fail.lock().unwrap().clear();
        assert!(prompts.synthesize("Hi Di.").await.is_ok());
        assert_eq!(tts.requests().len(), 2);
    }

    #[tokio::test]
    async fn per_call_clips_are_bounded_least_recently_used_first() {
        let tts = TestTts::default();
        let prompts = ScriptPrompts::new("v", statics(), Some(Arc::new(tts.clone())), None);
        let size = TestTts::pcm("Hi Al.").len(); // every "Hi Xx." is the same length
        prompts.set_dynamic_limit(size * 3);
        for name in ["Hi Al.", "Hi Bo.", "Hi Cy."] {
            prompts.synthesize(name).await.unwrap();
        }
        assert!(prompts.cached("Hi Al.").is_some()); // Al is now more recent than Bo
        prompts.synthesize("Hi Di.").await.unwrap();
        assert_eq!(prompts.dynamic_samples(), size * 3);
        assert!(
            prompts.cached("Hi Bo.").is_none(),
            "least recently used dropped"
        );
        for kept in ["Hi Al.", "Hi Cy.", "Hi Di."] {
            assert!(prompts.cached(kept).is_some(), "{kept}");
        }
        // Static texts are never evicted.
        prompts.synthesize("Hello.").await.unwrap();
        prompts.set_dynamic_limit(0);
        assert_eq!(prompts.dynamic_samples(), 0);
        assert!(prompts.cached("Hello.").is_some());
        // A clip larger than the whole limit is served but not kept.
        assert!(prompts.synthesize("Hi Ed.").await.is_ok());
        assert!(prompts.cached("Hi Ed.").is_none());
    }

    #[tokio::test]
    async fn fill_missing_synthesizes_what_the_disk_lacked() {
        let dir = tempfile::tempdir().unwrap();
        let disk = PromptCache::new(dir.path());
        disk.write_clip("v", "Hello.", &[5; 40]).unwrap();
        let tts = TestTts::default();
        tts.fail_on("Broken.");
        let mut texts = statics();
        texts.push("Broken.".into());
        let prompts =
            ScriptPrompts::new("v", texts, Some(Arc::new(tts.clone())), Some(disk.clone()));
        assert_eq!(prompts.load_from_disk().unwrap().len(), 2);
        let report = prompts.fill_missing().await;
        assert_eq!(report.synthesized, 1);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, "Broken.");
        assert_eq!(prompts.missing(), vec!["Broken.".to_owned()]);
        assert!(disk.has_clip("v", "Goodbye."));
        assert_eq!(tts.requests().iter().filter(|t| *t == "Hello.").count(), 0);
        assert_eq!(
            tts.closes.load(Ordering::SeqCst),
            tts.voices.load(Ordering::SeqCst)
        );
    }
}
