//! Echo guard: tells the caller's own speech from the bot's audio coming back down the line.
//!
//! On a speakerphone (or a line with poor echo cancellation) the bot's voice returns to us,
//! attenuated and delayed by tens to a few hundred milliseconds. A VAD calls that speech, and
//! without a guard the bot would interrupt itself. This is a frame-level Geigel-style
//! double-talk detector: a near-end (caller) frame is *explained by echo* when its level is at
//! least `margin_db` below the loudest far-end (bot) audio that played within the echo path's
//! delay window before it. A caller who really talks over the bot is louder than that, and is
//! not explained.
//!
//! Time is counted in samples on the call's inbound timeline (the caller's audio as received),
//! which runs in step with the carrier's playback of our audio. The guard is pure: callers tell
//! it where each piece of bot audio will play and ask about each inbound frame.

use std::collections::VecDeque;

use super::linear16;

/// Tuning of the echo guard.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EchoConfig {
    /// Longest echo path delay (ms) after the bot's audio plays.
    pub max_delay_ms: u32,
    /// How far (dB) below the bot's loudest recent audio a frame must be to count as echo.
    pub margin_db: f32,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            max_delay_ms: 400,
            margin_db: 6.0,
        }
    }
}

/// One block of bot audio on the playback timeline and its RMS level (0–1).
#[derive(Debug, Clone, Copy, PartialEq)]
struct FarBlock {
    start: u64,
    end: u64,
    rms: f32,
}

/// The far-end (bot) reference: block levels by playback time, and the decision rule.
#[derive(Debug, Clone)]
pub struct EchoGuard {
    block_samples: usize,
    max_delay_samples: u64,
    margin: f32,
    blocks: VecDeque<FarBlock>,
}

impl EchoGuard {
    /// A guard for audio at `sample_rate`, judging in 20 ms blocks.
    pub fn new(sample_rate: u32, config: EchoConfig) -> Self {
        let rate = u64::from(sample_rate.max(1));
        EchoGuard {
            block_samples: (sample_rate as usize / 50).max(1),
            max_delay_samples: rate * u64::from(config.max_delay_ms) / 1000,
            margin: 10f32.powf(-config.margin_db / 20.0),
            blocks: VecDeque::new(),
        }
    }

    /// Records bot audio that will play starting at `start_sample` of the inbound timeline.
    pub fn play(&mut self, start_sample: u64, pcm: &[i16]) {
        let mut at = start_sample;
        for block in pcm.chunks(self.block_samples) {
            let end = at + block.len() as u64;
            self.blocks.push_back(FarBlock {
                start: at,
                end,
                rms: linear16::rms(block),
            });
            at = end;
        }
    }

    /// Forgets bot audio scheduled at or after `sample` (it was cleared and will not play).
    pub fn cancel_from(&mut self, sample: u64) {
        while let Some(last) = self.blocks.back_mut() {
            if last.start >= sample {
                self.blocks.pop_back();
            } else {
                last.end = last.end.min(sample);
                break;
            }
        }
    }

    /// Whether a caller frame that ended at `frame_end_sample`, with RMS level `frame_rms`
    /// (0–1), can be explained as the bot's own audio coming back. Also drops reference audio
    /// too old to matter for later frames.
    pub fn explains(&mut self, frame_end_sample: u64, frame_rms: f32) -> bool {
        let horizon =
            frame_end_sample.saturating_sub(self.max_delay_samples + self.block_samples as u64);
        while self.blocks.front().is_some_and(|b| b.end < horizon) {
            self.blocks.pop_front();
        }
        let loudest = self
            .blocks
            .iter()
            .take_while(|b| b.start < frame_end_sample)
            .filter(|b| b.end >= horizon)
            .map(|b| b.rms)
            .fold(0.0f32, f32::max);
        loudest > 0.0 && frame_rms <= loudest * self.margin
    }

    /// Whether any bot audio is still on the reference timeline.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8000;

    fn tone(len: usize, amplitude: f32) -> Vec<i16> {
        (0..len)
            .map(|i| {
                let t = i as f32 / RATE as f32;
                (amplitude * 32767.0 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect()
    }

    fn guard() -> EchoGuard {
        EchoGuard::new(RATE, EchoConfig::default())
    }

    #[test]
    fn nothing_played_explains_nothing() {
        let mut g = guard();
        assert!(!g.explains(1600, 0.001));
        assert!(g.is_empty());
    }

    #[test]
    fn attenuated_delayed_copy_is_echo_and_louder_speech_is_not() {
        let mut g = guard();
        let bot = tone(8000, 0.3); // 1 s of bot audio from t=0
        g.play(0, &bot);
        let bot_rms = linear16::rms(&bot);
        // 10 dB down, 200 ms later: explained.
        for frame_end in (1760..=9600).step_by(160) {
            assert!(
                g.explains(frame_end, bot_rms * 0.316),
                "frame ending {frame_end}"
            );
        }
        // As loud as the bot: the caller is talking.
        let mut g = guard();
        g.play(0, &bot);
        assert!(!g.explains(4000, bot_rms));
    }

    #[test]
    fn reference_expires_after_the_echo_window() {
        let mut g = guard();
        g.play(0, &tone(800, 0.3)); // 100 ms
        // 100 ms + 400 ms window + one block later, nothing is left to explain a frame.
        assert!(g.explains(800 + 3000, 0.01));
        assert!(!g.explains(800 + 3200 + 320, 0.01));
        assert!(g.is_empty());
    }

    #[test]
    fn future_audio_does_not_explain_the_present() {
        let mut g = guard();
        g.play(16_000, &tone(1600, 0.3)); // scheduled 2 s from now
        assert!(!g.explains(1600, 0.01));
    }

    #[test]
    fn cancelled_audio_no_longer_explains() {
        let mut g = guard();
        g.play(0, &tone(1600, 0.3));
        g.play(1600, &tone(8000, 0.3));
        g.cancel_from(1600);
        // 1 s after the cancel, only the first 200 ms played: long expired.
        assert!(!g.explains(9600, 0.01));
    }
}
