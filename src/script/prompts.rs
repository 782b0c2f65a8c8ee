//! Where a scripted call's prompt audio comes from, and what a loaded script carries.
//!
//! A [`PromptSource`] hands out prompt audio by its text, for one voice: from memory when the
//! prompt was synthesized ahead of time (the prompt cache, or a per-call preparation before
//! dialing), otherwise by synthesizing it now and keeping it.

use std::sync::Arc;

use async_trait::async_trait;

use super::flow::Flow;
use crate::call::conversation::ConversationDeps;

/// Sample rate of every prompt clip.
pub const PROMPT_RATE: u32 = 8000;

/// A prompt's audio: mono 16-bit PCM at [`PROMPT_RATE`], shared without copying.
pub type PromptClip = Arc<[i16]>;

/// Why a prompt has no audio.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// The synthesizer failed or refused.
    #[error("cannot synthesize the prompt: {0}")]
    Synthesis(String),
    /// No synthesizer is configured and the text was not prepared ahead of time.
    #[error("no audio for this prompt and no synthesizer to make it: {text:?}")]
    NotPrepared {
        /// The text.
        text: String,
    },
}

/// Prompt audio for one voice, by text.
#[async_trait]
pub trait PromptSource: Send + Sync + 'static {
    /// The audio for `text` if it is in memory (never waits).
    fn cached(&self, text: &str) -> Option<PromptClip>;

    /// The audio for `text`, synthesized now if it is not in memory (and kept for next time).
    async fn synthesize(&self, text: &str) -> Result<PromptClip, PromptError>;
}

/// A script ready to run calls: its flow, hash, prompt audio and (when the flow hands calls to
/// the language model) the conversation pipeline.
#[derive(Clone)]
pub struct LoadedScript {
    /// The script's name (its file stem): calls run it as agent `script:<name>`.
    pub name: String,
    /// The parsed flow.
    pub flow: Arc<Flow>,
    /// Hash of the flow's canonical form.
    pub hash: String,
    /// Prompt audio in the flow's voice.
    pub prompts: Arc<dyn PromptSource>,
    /// The `llm` agent's dependencies, required when the flow has `agent` targets or nodes.
    pub conversation: Option<Arc<ConversationDeps>>,
    /// Variables every call of this script gets unless the call gives its own (e.g. the
    /// tenant's name).
    pub defaults: std::collections::HashMap<String, String>,
}

impl std::fmt::Debug for LoadedScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedScript")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .field("nodes", &self.flow.nodes.len())
            .field("llm", &self.conversation.is_some())
            .finish_non_exhaustive()
    }
}
