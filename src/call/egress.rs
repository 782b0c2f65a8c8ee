//! Egress: the bot's audio out to the carrier, and the playback ledger.
//!
//! Speech is cut into chunks that obey the carrier's [`ChunkRules`] (Exotel: multiples of
//! 320 bytes, at least 3 200); a `mark` follows every chunk. The carrier echoes each mark
//! when the audio before it has played, and the ledger advances on those echoes: it knows, at
//! every moment, which audio of which utterance the caller has heard. Marks are the playback
//! clock — audio sent is not audio heard.
//!
//! The ledger keeps the carrier's buffer at most `max_lead` ahead of playback (sent but not yet
//! confirmed), so a barge-in has little to flush. Clearing bumps no flags: every utterance has
//! an id, marks carry it, and marks of cleared utterances are recognised as stale.
//!
//! Pure: time is the call's inbound timeline in samples, passed in by the session.

use std::collections::VecDeque;

use super::agent::{Heard, Speech, UtteranceId};
use crate::audio::resample::{ResampleError, Resampler};
use crate::carrier::{ChunkRules, MediaFormat};

/// Egress tuning, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// Audio per chunk (raised to the carrier's minimum chunk).
    pub chunk_ms: u32,
    /// Most audio sent but unconfirmed (raised to two chunks).
    pub max_lead_ms: u32,
    /// A mark this late past its estimated play-out counts as played.
    pub mark_timeout_ms: u32,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            chunk_ms: 100,
            max_lead_ms: 300,
            mark_timeout_ms: 2_000,
        }
    }
}

/// One chunk ready to go: send `wire` as media, then `mark` as a mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutChunk {
    /// The utterance it belongs to.
    pub utterance: UtteranceId,
    /// Its index within the utterance (0, 1, …).
    pub index: u64,
    /// Audio in the carrier's wire encoding (padded to the minimum size where needed).
    pub wire: Vec<u8>,
    /// The same audio as PCM (padding included), for the echo guard.
    pub pcm: Vec<i16>,
    /// The mark to send after it.
    pub mark: String,
    /// Estimated inbound-timeline sample at which it starts playing.
    pub play_at: u64,
    /// Whether it is the utterance's first chunk.
    pub first: bool,
    /// The whole utterance's length in ms.
    pub utterance_ms: u64,
}

/// What an echoed mark meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkOutcome {
    /// Audio of a live utterance has played up to this chunk.
    Played {
        /// The utterance.
        utterance: UtteranceId,
        /// The chunk's index.
        chunk: u64,
        /// Milliseconds of the utterance confirmed played.
        played_ms: u64,
        /// Whether the utterance has now played to its end.
        finished: bool,
    },
    /// A mark of audio that was cleared, or already accounted for: ignored.
    Stale,
    /// A name this gateway never sent.
    Unknown,
}

/// A chunk sent and not yet confirmed played.
#[derive(Debug, Clone)]
struct InFlight {
    utterance: UtteranceId,
    index: u64,
    /// Real audio samples (without padding).
    samples: usize,
    /// Samples the carrier plays (with padding).
    padded: usize,
    start: u64,
    end: u64,
}

/// An utterance with audio still to send or confirm.
#[derive(Debug, Clone)]
struct Utterance {
    id: UtteranceId,
    pcm: Vec<i16>,
    sent: usize,
    played: usize,
    next_index: u64,
}

/// The egress ledger of one call.
#[derive(Debug)]
pub struct Egress {
    format: MediaFormat,
    chunk_samples: usize,
    min_chunk_samples: usize,
    max_lead_samples: usize,
    mark_timeout_samples: u64,
    next_id: UtteranceId,
    queue: VecDeque<Utterance>,
    in_flight: VecDeque<InFlight>,
    /// Estimated end of everything sent so far, on the inbound timeline.
    cursor: u64,
    timed_out_marks: u64,
}

/// Samples per millisecond-count at a rate.
fn ms_to_samples(ms: u64, rate: u32) -> u64 {
    ms * u64::from(rate) / 1000
}

fn samples_to_ms(samples: u64, rate: u32) -> u64 {
    if rate == 0 {
        return 0;
    }
    samples * 1000 / u64::from(rate)
}

impl Egress {
    /// A ledger for a stream of `format` whose payloads must obey `rules`.
    pub fn new(format: MediaFormat, rules: ChunkRules, config: EgressConfig) -> Self {
        let bps = format.encoding.bytes_per_sample().max(1);
        let rate = format.sample_rate;
        let wanted_bytes = ms_to_samples(u64::from(config.chunk_ms), rate) as usize * bps;
        let multiple = rules.multiple_of.max(1);
        let rounded = wanted_bytes.div_ceil(multiple) * multiple;
        let chunk_bytes = rounded.clamp(rules.min_bytes.max(bps), rules.max_bytes.max(bps));
        let chunk_samples = (chunk_bytes / bps).max(1);
        let min_chunk_samples = rules.min_bytes.div_ceil(bps);
        let max_lead_samples =
            (ms_to_samples(u64::from(config.max_lead_ms), rate) as usize).max(2 * chunk_samples);
        Egress {
            format,
            chunk_samples,
            min_chunk_samples,
            max_lead_samples,
            mark_timeout_samples: ms_to_samples(u64::from(config.mark_timeout_ms), rate),
            next_id: 1,
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            cursor: 0,
            timed_out_marks: 0,
        }
    }

    /// Samples per chunk.
    pub fn chunk_samples(&self) -> usize {
        self.chunk_samples
    }

    /// The most audio (samples) sent ahead of confirmed playback.
    pub fn max_lead_samples(&self) -> usize {
        self.max_lead_samples
    }

    /// Queues speech after what is already queued, resampling it to the call's rate.
    pub fn enqueue(&mut self, speech: Speech) -> Result<UtteranceId, ResampleError> {
        let pcm = if speech.sample_rate == self.format.sample_rate {
            speech.pcm
        } else {
            let mut resampler = Resampler::new(speech.sample_rate, self.format.sample_rate)?;
            let mut out = Vec::with_capacity(
                speech.pcm.len() * self.format.sample_rate as usize
                    / speech.sample_rate.max(1) as usize
                    + 1024,
            );
            resampler.process(&speech.pcm, &mut out);
            resampler.flush(&mut out);
            out
        };
        let id = self.next_id;
        self.next_id += 1;
        if !pcm.is_empty() {
            self.queue.push_back(Utterance {
                id,
                pcm,
                sent: 0,
                played: 0,
                next_index: 0,
            });
        }
        Ok(id)
    }

    /// Whether the bot has audio queued or playing.
    pub fn is_speaking(&self) -> bool {
        !self.queue.is_empty() || !self.in_flight.is_empty()
    }

    /// The utterance now playing (or next to play), if any.
    pub fn current_utterance(&self) -> Option<UtteranceId> {
        self.in_flight
            .front()
            .map(|c| c.utterance)
            .or_else(|| self.queue.front().map(|u| u.id))
    }

    /// Samples sent and not yet confirmed played.
    pub fn unconfirmed_samples(&self) -> usize {
        self.in_flight.iter().map(|c| c.padded).sum()
    }

    /// Marks that timed out and were assumed played, so far.
    pub fn timed_out_marks(&self) -> u64 {
        self.timed_out_marks
    }

    /// Releases as many chunks as the lead allows at inbound-timeline sample `now`, and times
    /// out marks that are long overdue. Returns the utterances that finished by time-out.
    pub fn poll(&mut self, now: u64, out: &mut Vec<OutChunk>) -> Vec<UtteranceId> {
        let finished = self.expire_marks(now);
        while let Some(chunk) = self.next_chunk(now) {
            out.push(chunk);
        }
        finished
    }

    fn expire_marks(&mut self, now: u64) -> Vec<UtteranceId> {
        let mut finished = Vec::new();
        while let Some(front) = self.in_flight.front() {
            if now <= front.end + self.mark_timeout_samples {
                break;
            }
            let name = mark_name(front.utterance, front.index);
            self.timed_out_marks += 1;
            if let MarkOutcome::Played {
                utterance,
                finished: true,
                ..
            } = self.confirm_through(&name, now)
            {
                finished.push(utterance);
            }
        }
        finished
    }

    fn next_chunk(&mut self, now: u64) -> Option<OutChunk> {
        let lead = self.unconfirmed_samples();
        if !self.in_flight.is_empty() && lead + self.chunk_samples > self.max_lead_samples {
            return None;
        }
        let rate = self.format.sample_rate;
        let utterance = self.queue.iter_mut().find(|u| u.sent < u.pcm.len())?;
        let take = self.chunk_samples.min(utterance.pcm.len() - utterance.sent);
        let mut pcm = utterance.pcm[utterance.sent..utterance.sent + take].to_vec();
        let padded = take.max(self.min_chunk_samples);
        pcm.resize(padded, 0);
        let index = utterance.next_index;
        let first = utterance.sent == 0;
        utterance.sent += take;
        utterance.next_index += 1;
        let id = utterance.id;
        let utterance_ms = samples_to_ms(utterance.pcm.len() as u64, rate);

        let start = self.cursor.max(now);
        let end = start + padded as u64;
        self.cursor = end;
        self.in_flight.push_back(InFlight {
            utterance: id,
            index,
            samples: take,
            padded,
            start,
            end,
        });
        let mut wire = Vec::with_capacity(padded * self.format.encoding.bytes_per_sample());
        self.format.encoding.encode_into(&pcm, &mut wire);
        Some(OutChunk {
            utterance: id,
            index,
            wire,
            pcm,
            mark: mark_name(id, index),
            play_at: start,
            first,
            utterance_ms,
        })
    }

    /// Applies an echoed mark received at `now`.
    pub fn on_mark(&mut self, name: &str, now: u64) -> MarkOutcome {
        let Some((utterance, index)) = parse_mark_name(name) else {
            return MarkOutcome::Unknown;
        };
        if utterance == 0 || utterance >= self.next_id {
            return MarkOutcome::Unknown;
        }
        if !self
            .in_flight
            .iter()
            .any(|c| c.utterance == utterance && c.index == index)
        {
            return MarkOutcome::Stale;
        }
        self.confirm_through(name, now)
    }

    /// Confirms every in-flight chunk up to and including the one named (marks come back in
    /// order, so an earlier missing mark means its audio played too), then re-estimates when
    /// the remaining chunks play.
    fn confirm_through(&mut self, name: &str, now: u64) -> MarkOutcome {
        let mut outcome = MarkOutcome::Stale;
        while let Some(chunk) = self.in_flight.pop_front() {
            let this = mark_name(chunk.utterance, chunk.index) == name;
            let rate = self.format.sample_rate;
            let mut played_ms = 0;
            let mut finished = false;
            if let Some(pos) = self.queue.iter().position(|u| u.id == chunk.utterance) {
                let u = &mut self.queue[pos];
                u.played += chunk.samples;
                played_ms = samples_to_ms(u.played as u64, rate);
                if u.played >= u.pcm.len() {
                    finished = true;
                    self.queue.remove(pos);
                }
            }
            if this || finished {
                outcome = MarkOutcome::Played {
                    utterance: chunk.utterance,
                    chunk: chunk.index,
                    played_ms,
                    finished,
                };
            }
            if this {
                break;
            }
        }
        let mut t = now;
        for chunk in self.in_flight.iter_mut() {
            chunk.start = t;
            chunk.end = t + chunk.padded as u64;
            t = chunk.end;
        }
        self.cursor = if self.in_flight.is_empty() { now } else { t };
        outcome
    }

    /// Drops everything queued and in flight (after a `clear` has been sent) at `now`, and
    /// reports how much of the utterance that was playing the caller heard.
    pub fn clear(&mut self, now: u64) -> Option<Heard> {
        let rate = self.format.sample_rate;
        let current = self.current_utterance()?;
        let heard = self.queue.iter().find(|u| u.id == current).map(|u| {
            let partial = self
                .in_flight
                .front()
                .filter(|c| c.utterance == current && now > c.start)
                .map(|c| ((now - c.start) as usize).min(c.samples))
                .unwrap_or(0);
            Heard {
                utterance: current,
                heard_ms: samples_to_ms((u.played + partial) as u64, rate),
                sent_ms: samples_to_ms(u.sent as u64, rate),
                total_ms: samples_to_ms(u.pcm.len() as u64, rate),
            }
        });
        self.queue.clear();
        self.in_flight.clear();
        self.cursor = now;
        heard
    }
}

/// The mark name of chunk `index` of `utterance`: `u{utterance}c{index}`.
///
/// ```
/// use voicegw::call::egress::{mark_name, parse_mark_name};
/// assert_eq!(mark_name(3, 12), "u3c12");
/// assert_eq!(parse_mark_name("u3c12"), Some((3, 12)));
/// assert_eq!(parse_mark_name("turn-3"), None);
/// ```
pub fn mark_name(utterance: UtteranceId, index: u64) -> String {
    format!("u{utterance}c{index}")
}

/// Parses a name made by [`mark_name`].
pub fn parse_mark_name(name: &str) -> Option<(UtteranceId, u64)> {
    let rest = name.strip_prefix('u')?;
    let (utterance, index) = rest.split_once('c')?;
    Some((utterance.parse().ok()?, index.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::Encoding;

    fn twilio() -> (MediaFormat, ChunkRules) {
        (
            MediaFormat {
                encoding: Encoding::Mulaw,
                sample_rate: 8000,
                channels: 1,
            },
            ChunkRules {
                multiple_of: 1,
                min_bytes: 1,
                max_bytes: 8000,
            },
        )
    }

    fn exotel(rate: u32) -> (MediaFormat, ChunkRules) {
        let multiple = 320 * (rate as usize / 8000);
        (
            MediaFormat {
                encoding: Encoding::Linear16,
                sample_rate: rate,
                channels: 1,
            },
            ChunkRules {
                multiple_of: multiple,
                min_bytes: 3200usize.div_ceil(multiple) * multiple,
                max_bytes: 100_000 / multiple * multiple,
            },
        )
    }

    fn speech(ms: u64, rate: u32) -> Speech {
        let n = (ms * u64::from(rate) / 1000) as usize;
        Speech::pcm((0..n).map(|i| ((i % 50) as i16 - 25) * 400).collect(), rate)
    }

    #[test]
    fn mark_names_round_trip_and_reject_garbage() {
        assert_eq!(parse_mark_name(&mark_name(3, 12)), Some((3, 12)));
        for bad in [
            "", "u", "uc", "u3", "3c1", "u3c", "ux3c1", "u-1c2", "turn-3",
        ] {
            assert_eq!(parse_mark_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn twilio_chunks_are_100ms_with_a_short_tail_and_lead_is_bounded() {
        let (format, rules) = twilio();
        let mut egress = Egress::new(format, rules, EgressConfig::default());
        egress.enqueue(speech(1050, 8000)).unwrap();
        let mut out = Vec::new();
        egress.poll(0, &mut out);
        assert_eq!(out.len(), 3, "300 ms lead = three 100 ms chunks");
        assert!(out.iter().all(|c| c.wire.len() == 800));
        assert_eq!(out[0].mark, "u1c0");
        assert!(out[0].first && !out[1].first);
        assert_eq!(
            (out[0].play_at, out[1].play_at, out[2].play_at),
            (0, 800, 1600)
        );
        assert_eq!(egress.unconfirmed_samples(), 2400);
        // Nothing more until a mark comes back.
        out.clear();
        egress.poll(400, &mut out);
        assert!(out.is_empty());
        // Mark for chunk 0 at 100 ms: one more chunk may go.
        assert_eq!(
            egress.on_mark("u1c0", 800),
            MarkOutcome::Played {
                utterance: 1,
                chunk: 0,
                played_ms: 100,
                finished: false
            }
        );
        egress.poll(800, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].play_at, 2400);
        // Play everything out: the last chunk is the 50 ms tail.
        let mut now = 800;
        let mut finished = false;
        let mut last = out[0].clone();
        loop {
            out.clear();
            egress.poll(now, &mut out);
            if let Some(c) = out.last() {
                last = c.clone();
            }
            let Some(front) = egress.in_flight.front().cloned() else {
                break;
            };
            now = front.end;
            if let MarkOutcome::Played { finished: f, .. } =
                egress.on_mark(&mark_name(front.utterance, front.index), now)
            {
                finished = f;
            }
        }
        assert!(finished);
        assert_eq!(last.wire.len(), 400, "50 ms tail, no padding on Twilio");
        assert!(!egress.is_speaking());
    }

    #[test]
    fn exotel_chunks_obey_the_320_multiple_and_3200_minimum_at_every_rate() {
        for rate in [8000, 16000, 24000] {
            let (format, rules) = exotel(rate);
            let mut egress = Egress::new(format, rules, EgressConfig::default());
            egress.enqueue(speech(730, rate)).unwrap();
            let mut all = Vec::new();
            let mut now = 0;
            while egress.is_speaking() {
                let mut out = Vec::new();
                egress.poll(now, &mut out);
                all.extend(out);
                let front = egress.in_flight.front().cloned().unwrap();
                now = front.end;
                egress.on_mark(&mark_name(front.utterance, front.index), now);
            }
            for chunk in &all {
                assert!(
                    rules.allows(chunk.wire.len()),
                    "{rate}: {} bytes",
                    chunk.wire.len()
                );
                assert_eq!(chunk.wire.len(), chunk.pcm.len() * 2);
            }
            let padded_tail = all.last().unwrap();
            assert!(
                padded_tail.pcm.iter().rev().take(10).all(|s| *s == 0),
                "tail padded with silence"
            );
        }
    }

    #[test]
    fn exotel_lead_is_at_least_two_chunks() {
        let (format, rules) = exotel(8000);
        let egress = Egress::new(format, rules, EgressConfig::default());
        assert_eq!(
            egress.chunk_samples(),
            1600,
            "3 200 bytes = 200 ms at 8 kHz"
        );
        assert_eq!(egress.max_lead_samples(), 3200);
    }

    #[test]
    fn clear_reports_heard_audio_and_later_marks_are_stale() {
        let (format, rules) = twilio();
        let mut egress = Egress::new(format, rules, EgressConfig::default());
        let id = egress.enqueue(speech(2000, 8000)).unwrap();
        egress.enqueue(speech(500, 8000)).unwrap();
        let mut out = Vec::new();
        egress.poll(0, &mut out);
        egress.on_mark("u1c0", 800);
        egress.poll(800, &mut out);
        // 50 ms into chunk 1 the caller barges in.
        let heard = egress.clear(1200).unwrap();
        assert_eq!(
            heard,
            Heard {
                utterance: id,
                heard_ms: 150,
                sent_ms: 400,
                total_ms: 2000
            }
        );
        assert!(!egress.is_speaking(), "queued utterances are dropped too");
        // Twilio returns the pending marks after a clear: they are stale.
        assert_eq!(egress.on_mark("u1c1", 1300), MarkOutcome::Stale);
        assert_eq!(egress.on_mark("u9c0", 1300), MarkOutcome::Unknown);
        assert_eq!(egress.on_mark("turn-3", 1300), MarkOutcome::Unknown);
        // New speech starts at `now`, not at the old cursor.
        egress.enqueue(speech(100, 8000)).unwrap();
        out.clear();
        egress.poll(1400, &mut out);
        assert_eq!(out[0].play_at, 1400);
        assert_eq!(out[0].utterance, 3);
    }

    #[test]
    fn a_lost_mark_is_covered_by_the_next_and_overdue_marks_time_out() {
        let (format, rules) = twilio();
        let mut egress = Egress::new(format, rules, EgressConfig::default());
        egress.enqueue(speech(300, 8000)).unwrap();
        let mut out = Vec::new();
        egress.poll(0, &mut out);
        assert_eq!(
            egress.on_mark("u1c1", 1600),
            MarkOutcome::Played {
                utterance: 1,
                chunk: 1,
                played_ms: 200,
                finished: false
            }
        );
        // The last mark never comes: 2 s past its end it counts as played.
        assert!(egress.poll(2400 + 16_000, &mut out).is_empty());
        assert_eq!(egress.poll(2400 + 16_001, &mut out), vec![1]);
        assert_eq!(egress.timed_out_marks(), 1);
        assert!(!egress.is_speaking());
    }

    #[test]
    fn speech_at_another_rate_is_resampled() {
        let (format, rules) = twilio();
        let mut egress = Egress::new(format, rules, EgressConfig::default());
        egress.enqueue(speech(1000, 16000)).unwrap();
        let total: usize = egress.queue.iter().map(|u| u.pcm.len()).sum();
        assert!((7900..=8200).contains(&total), "{total}");
    }

    #[test]
    fn empty_speech_queues_nothing() {
        let (format, rules) = twilio();
        let mut egress = Egress::new(format, rules, EgressConfig::default());
        egress.enqueue(Speech::pcm(vec![], 8000)).unwrap();
        assert!(!egress.is_speaking());
        assert_eq!(egress.clear(0), None);
    }
}
