//! The prompt texts of one scripted call and their audio.
//!
//! Each distinct text (rendered with the call's variables) gets a [`TextId`]. Its audio is in
//! memory when the prompt cache has it; otherwise it is synthesized for the call: in the
//! background from the start of the call, a few at a time in the order the call is likely to
//! need them, and at once when a node needs a prompt that is not ready yet. Results come back
//! to the agent as a [`PromptReady`] wake message; a text is never synthesized twice at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::prompts::{PromptClip, PromptError, PromptSource};
use crate::call::agent::{AgentAction, AgentPort};

/// Background syntheses running at once for one call.
const WARM_UP_PARALLEL: usize = 2;

/// Names one distinct prompt text of a call.
pub type TextId = usize;

/// A synthesis finished (sent to the agent as [`AgentAction::Wake`]).
#[derive(Debug)]
pub struct PromptReady {
    /// The text.
    pub text: TextId,
    /// Its audio, or why there is none.
    pub result: Result<PromptClip, PromptError>,
}

#[derive(Debug)]
struct Slot {
    text: Arc<str>,
    /// The audio, and whether it came from the prompt cache.
    audio: Option<(PromptClip, bool)>,
    /// A synthesis task owns the text.
    claimed: Arc<AtomicBool>,
}

/// The prompt texts of one call.
pub struct CallPrompts {
    source: Arc<dyn PromptSource>,
    slots: Vec<Slot>,
    ids: HashMap<Arc<str>, TextId>,
}

impl std::fmt::Debug for CallPrompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallPrompts")
            .field("texts", &self.slots.len())
            .field(
                "ready",
                &self.slots.iter().filter(|s| s.audio.is_some()).count(),
            )
            .finish()
    }
}

impl CallPrompts {
    /// No texts yet; audio comes from `source`.
    pub fn new(source: Arc<dyn PromptSource>) -> Self {
        CallPrompts {
            source,
            slots: Vec::new(),
            ids: HashMap::new(),
        }
    }

    /// The id of `text`, added if new (taking its audio from the cache when it is there).
    pub fn add(&mut self, text: &str) -> TextId {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let text: Arc<str> = Arc::from(text);
        let audio = self.source.cached(&text).map(|clip| (clip, true));
        let id = self.slots.len();
        self.slots.push(Slot {
            text: text.clone(),
            audio,
            claimed: Arc::new(AtomicBool::new(false)),
        });
        self.ids.insert(text, id);
        id
    }

    /// The text of `id` (empty for an id this call never handed out).
    pub fn text(&self, id: TextId) -> &str {
        self.slots.get(id).map(|s| &*s.text).unwrap_or_default()
    }

    /// The audio of `id` if it is in memory now, and whether it came from the prompt cache.
    pub fn ready(&mut self, id: TextId) -> Option<(PromptClip, bool)> {
        let slot = self.slots.get_mut(id)?;
        if slot.audio.is_none() {
            slot.audio = self.source.cached(&slot.text).map(|clip| (clip, true));
        }
        slot.audio.clone()
    }

    /// Keeps what a synthesis brought; after a failure the text may be tried again.
    pub fn store(&mut self, ready: &PromptReady) {
        let Some(slot) = self.slots.get_mut(ready.text) else {
            return;
        };
        match &ready.result {
            Ok(clip) => {
                if slot.audio.is_none() {
                    slot.audio = Some((clip.clone(), false));
                }
            }
            Err(_) => slot.claimed.store(false, Ordering::SeqCst),
        }
    }

    /// Synthesizes, in the background and in this order, every text of `order` not in memory;
    /// stops when `cancel` is cancelled.
    pub fn warm_up(&self, order: &[TextId], port: &AgentPort, cancel: &CancellationToken) {
        let jobs: Vec<(TextId, Arc<str>, Arc<AtomicBool>)> = order
            .iter()
            .filter_map(|&id| self.slots.get(id).map(|slot| (id, slot)))
            .filter(|(_, slot)| slot.audio.is_none())
            .map(|(id, slot)| (id, slot.text.clone(), slot.claimed.clone()))
            .collect();
        if jobs.is_empty() {
            return;
        }
        let source = self.source.clone();
        let port = port.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let work = futures::stream::iter(jobs).for_each_concurrent(
                WARM_UP_PARALLEL,
                |(id, text, claimed)| {
                    let source = source.clone();
                    let port = port.clone();
                    async move {
                        if source.cached(&text).is_some() || claimed.swap(true, Ordering::SeqCst) {
                            return;
                        }
                        let result = source.synthesize(&text).await;
                        let _ = port
                            .send(AgentAction::Wake(Box::new(PromptReady {
                                text: id,
                                result,
                            })))
                            .await;
                    }
                },
            );
            tokio::select! {
                _ = cancel.cancelled() => {}
                () = work => {}
            }
        });
    }

    /// Starts synthesizing `id` now unless it is in memory or a task already is.
    pub fn request(&mut self, id: TextId, port: &AgentPort, cancel: &CancellationToken) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        if slot.audio.is_some() || slot.claimed.swap(true, Ordering::SeqCst) {
            return;
        }
        let source = self.source.clone();
        let text = slot.text.clone();
        let port = port.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                result = source.synthesize(&text) => result,
            };
            let _ = port
                .send(AgentAction::Wake(Box::new(PromptReady {
                    text: id,
                    result,
                })))
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::agent::UtteranceIds;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// Audio for every text but "bad"; "primed" is in the cache from the start.
    #[derive(Default)]
    struct Source {
        kept: Mutex<HashMap<String, PromptClip>>,
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl PromptSource for Source {
        fn cached(&self, text: &str) -> Option<PromptClip> {
            if text == "primed" {
                return Some(Arc::from(vec![1i16; 4]));
            }
            self.kept.lock().ok()?.get(text).cloned()
        }

        async fn synthesize(&self, text: &str) -> Result<PromptClip, PromptError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if text == "bad" {
                return Err(PromptError::Synthesis("refused".into()));
            }
            let clip: PromptClip = Arc::from(vec![7i16; text.len()]);
            if let Ok(mut kept) = self.kept.lock() {
                kept.insert(text.to_owned(), clip.clone());
            }
            Ok(clip)
        }
    }

    fn port() -> (AgentPort, mpsc::Receiver<AgentAction>) {
        let (tx, rx) = mpsc::channel(16);
        (AgentPort::new(tx, UtteranceIds::default()), rx)
    }

    async fn next_ready(rx: &mut mpsc::Receiver<AgentAction>) -> PromptReady {
        let action = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("in time")
            .expect("an action");
        match action {
            AgentAction::Wake(message) => *message.downcast::<PromptReady>().expect("ready"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn texts_are_shared_and_cached_audio_is_ready_at_once() {
        let source = Arc::new(Source::default());
        let mut prompts = CallPrompts::new(source.clone());
        let a = prompts.add("primed");
        let b = prompts.add("hello there");
        assert_eq!(prompts.add("primed"), a);
        assert_ne!(a, b);
        assert_eq!(prompts.text(b), "hello there");
        assert_eq!(prompts.text(99), "");
        assert_eq!(
            prompts.ready(a).map(|(c, cached)| (c.len(), cached)),
            Some((4, true))
        );
        assert!(prompts.ready(b).is_none());
        assert!(prompts.ready(99).is_none());
    }

    #[tokio::test]
    async fn warm_up_synthesizes_each_missing_text_once() {
        let source = Arc::new(Source::default());
        let mut prompts = CallPrompts::new(source.clone());
        let ids: Vec<TextId> = ["primed", "one", "two", "three"]
            .iter()
            .map(|t| prompts.add(t))
            .collect();
        let (port, mut rx) = port();
        let cancel = CancellationToken::new();
        prompts.warm_up(&ids, &port, &cancel);
        // Asking again while the warm-up runs starts nothing new.
        prompts.request(ids[1], &port, &cancel);
        let mut got = Vec::new();
        for _ in 0..3 {
            let ready = next_ready(&mut rx).await;
            prompts.store(&ready);
            got.push(ready.text);
        }
        got.sort();
        assert_eq!(got, ids[1..].to_vec());
        assert_eq!(source.calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            prompts.ready(ids[2]).map(|(c, cached)| (c.len(), cached)),
            Some((3, false))
        );
        // Ready texts are not synthesized again.
        prompts.request(ids[2], &port, &cancel);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(rx.try_recv().is_err());
        assert_eq!(source.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_text_may_be_tried_again() {
        let source = Arc::new(Source::default());
        let mut prompts = CallPrompts::new(source.clone());
        let bad = prompts.add("bad");
        let (port, mut rx) = port();
        let cancel = CancellationToken::new();
        prompts.request(bad, &port, &cancel);
        let ready = next_ready(&mut rx).await;
        assert!(matches!(ready.result, Err(PromptError::Synthesis(_))));
        prompts.store(&ready);
        prompts.request(bad, &port, &cancel);
        let again = next_ready(&mut rx).await;
        assert_eq!(again.text, bad);
        assert_eq!(source.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn cancelled_work_reports_nothing() {
        let source = Arc::new(Source::default());
        let mut prompts = CallPrompts::new(source.clone());
        let id = prompts.add("late");
        let (port, mut rx) = port();
        let cancel = CancellationToken::new();
        prompts.request(id, &port, &cancel);
        cancel.cancel();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(rx.try_recv().is_err());
    }
}
