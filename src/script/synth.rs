//! One prompt, synthesized whole: sends its text to a [`TtsVoice`] and collects the PCM pieces
//! into one clip, within a time limit.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::tts::{SynthesisStats, TtsError, TtsVoice};

/// Longest time one prompt's synthesis may take (a long prompt over a slow REST fallback).
pub const SYNTH_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a prompt has no clip.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SynthError {
    /// The synthesizer failed.
    #[error(transparent)]
    Tts(#[from] TtsError),
    /// It did not finish in time.
    #[error("synthesis did not finish within {ms} ms")]
    TimedOut {
        /// The limit.
        ms: u64,
    },
    /// It finished with no audio.
    #[error("the synthesizer returned no audio")]
    Empty,
}

/// A synthesized clip and what it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthesized {
    /// PCM at the voice's rate.
    pub pcm: Vec<i16>,
    /// The provider's statistics.
    pub stats: SynthesisStats,
    /// Wall time from the request to the last sample.
    pub took: Duration,
}

/// Synthesizes `text` with `voice`, collecting every piece. After a time-out the voice may be
/// mid-segment: close it and use a new one.
pub async fn synthesize_clip(
    voice: &mut dyn TtsVoice,
    text: &str,
    limit: Duration,
) -> Result<Synthesized, SynthError> {
    let started = Instant::now();
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
        let result = voice.synthesize(text, &tx, &cancel).await;
        drop(tx);
        result
    };
    let both = async { tokio::join!(synth, collect) };
    let (result, pcm) =
        tokio::time::timeout(limit, both)
            .await
            .map_err(|_| SynthError::TimedOut {
                ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            })?;
    let stats = result?;
    if pcm.is_empty() {
        return Err(SynthError::Empty);
    }
    Ok(Synthesized {
        pcm,
        stats,
        took: started.elapsed(),
    })
}

#[cfg(test)]
pub(crate) mod test_voice {
    //! A scripted in-memory synthesizer for unit tests.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::tts::TtsProvider;

    /// Synthesizes each text as `len(text) * 10` samples of the text's length, after `delay`;
    /// texts in `fail` are refused; every request is counted.
    #[derive(Clone, Default)]
    pub struct TestTts {
        pub delay: Duration,
        pub fail: Arc<Mutex<Vec<String>>>,
        pub requests: Arc<Mutex<Vec<String>>>,
        pub active: Arc<AtomicUsize>,
        pub max_active: Arc<AtomicUsize>,
        pub voices: Arc<AtomicUsize>,
        pub closes: Arc<AtomicUsize>,
        pub silent: Arc<Mutex<Vec<String>>>,
    }

    impl TestTts {
        pub fn with_delay(delay: Duration) -> Self {
            TestTts {
                delay,
                ..TestTts::default()
            }
        }

        pub fn fail_on(&self, text: &str) {
            self.fail.lock().unwrap().push(text.to_owned());
        }

        pub fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }

        /// The clip this fake makes for `text`.
        pub fn pcm(text: &str) -> Vec<i16> {
            let level = i16::try_from(text.len() % 1000).unwrap() + 1;
            vec![level * 10; text.len() * 10]
        }
    }

    struct TestVoice {
        tts: TestTts,
    }

    #[async_trait::async_trait]
    impl TtsVoice for TestVoice {
        async fn synthesize(
            &mut self,
            text: &str,
            out: &mpsc::Sender<Vec<i16>>,
            _cancel: &CancellationToken,
        ) -> Result<SynthesisStats, TtsError> {
            self.tts.requests.lock().unwrap().push(text.to_owned());
            let now = self.tts.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.tts.max_active.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.tts.delay).await;
            self.tts.active.fetch_sub(1, Ordering::SeqCst);
            if self.tts.fail.lock().unwrap().iter().any(|f| f == text) {
                return Err(TtsError::Refused {
                    provider: "test",
                    reason: format!("refused {text:?}"),
                });
            }
            if self.tts.silent.lock().unwrap().iter().any(|s| s == text) {
                return Ok(SynthesisStats::default());
            }
            let pcm = TestTts::pcm(text);
            for piece in pcm.chunks(7) {
                let _ = out.send(piece.to_vec()).await;
            }
            Ok(SynthesisStats {
                samples: pcm.len() as u64,
                ..SynthesisStats::default()
            })
        }

        async fn close(&mut self) {
            self.tts.closes.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl TtsProvider for TestTts {
        fn name(&self) -> &'static str {
            "test"
        }

        fn voice(&self, _sample_rate: u32) -> Box<dyn TtsVoice> {
            self.voices.fetch_add(1, Ordering::SeqCst);
            Box::new(TestVoice { tts: self.clone() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_voice::TestTts;
    use super::*;
    use crate::tts::TtsProvider;

    #[tokio::test]
    async fn collects_every_piece() {
        let tts = TestTts::default();
        let mut voice = tts.voice(8000);
        let got = synthesize_clip(voice.as_mut(), "hello", SYNTH_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(got.pcm, TestTts::pcm("hello"));
        assert_eq!(got.stats.samples, 50);
    }

    #[tokio::test]
    async fn failures_time_outs_and_silence_are_errors() {
        let tts = TestTts::default();
        tts.fail_on("no");
        let mut voice = tts.voice(8000);
        assert!(matches!(
            synthesize_clip(voice.as_mut(), "no", SYNTH_TIMEOUT).await,
            Err(SynthError::Tts(TtsError::Refused { .. }))
        ));
        tts.silent.lock().unwrap().push("quiet".into());
        assert_eq!(
            synthesize_clip(voice.as_mut(), "quiet", SYNTH_TIMEOUT).await,
            Err(SynthError::Empty)
        );
        let slow = TestTts::with_delay(Duration::from_secs(5));
        let mut voice = slow.voice(8000);
        assert_eq!(
            synthesize_clip(voice.as_mut(), "late", Duration::from_millis(30)).await,
            Err(SynthError::TimedOut { ms: 30 })
        );
    }
}
