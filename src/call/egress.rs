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

use super::agent::{Heard, Speech, UtteranceId, UtteranceIds};
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
    /// On resuming after a false barge-in, replay from the start of the interrupted text
    /// segment when it began at most this long before the cut (else from the cut itself).
    pub resume_rewind_ms: u32,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            chunk_ms: 100,
            max_lead_ms: 300,
            mark_timeout_ms: 2_000,
            resume_rewind_ms: 1_500,
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
    /// The utterance's length in ms so far (final once it is closed).
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

/// A run of an utterance's audio that says one piece of text.
#[derive(Debug, Clone)]
struct TextSpan {
    /// First sample of the span in the utterance.
    start: usize,
    text: String,
}

/// An utterance with audio still to send or confirm.
struct Utterance {
    id: UtteranceId,
    pcm: Vec<i16>,
    spans: Vec<TextSpan>,
    /// More audio may still be appended.
    open: bool,
    sent: usize,
    played: usize,
    next_index: u64,
    /// Converts appended audio at another rate (kept across appends).
    resampler: Option<(u32, Resampler)>,
}

impl std::fmt::Debug for Utterance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Utterance")
            .field("id", &self.id)
            .field("samples", &self.pcm.len())
            .field("open", &self.open)
            .field("sent", &self.sent)
            .field("played", &self.played)
            .finish()
    }
}

impl Utterance {
    fn new(id: UtteranceId) -> Self {
        Utterance {
            id,
            pcm: Vec::new(),
            spans: Vec::new(),
            open: true,
            sent: 0,
            played: 0,
            next_index: 0,
            resampler: None,
        }
    }

    fn done(&self) -> bool {
        !self.open && self.played >= self.pcm.len()
    }

    /// Where span `i` ends (the next span's start, or the audio so far).
    fn span_end(&self, i: usize) -> usize {
        self.spans
            .get(i + 1)
            .map(|s| s.start)
            .unwrap_or(self.pcm.len())
    }

    /// The full text, if the utterance has any.
    fn text(&self) -> Option<String> {
        if self.spans.is_empty() {
            return None;
        }
        Some(join_words(self.spans.iter().map(|s| s.text.as_str())))
    }

    /// The words of the text heard in the first `samples` samples: whole spans, then the
    /// share of the partly played span's words proportional to the audio played of it.
    fn heard_text(&self, samples: usize) -> Option<String> {
        if self.spans.is_empty() {
            return None;
        }
        let mut parts: Vec<String> = Vec::new();
        for (i, span) in self.spans.iter().enumerate() {
            if span.start >= samples {
                break;
            }
            let end = self.span_end(i);
            if end <= samples {
                parts.push(span.text.clone());
                continue;
            }
            let fraction = (samples - span.start) as f64 / (end - span.start).max(1) as f64;
            parts.push(leading_words(&span.text, fraction));
            break;
        }
        Some(join_words(parts.iter().map(String::as_str)))
    }

    /// Start of the text span playing at `sample`.
    fn span_start_at(&self, sample: usize) -> Option<usize> {
        self.spans
            .iter()
            .rev()
            .find(|s| s.start <= sample)
            .map(|s| s.start)
    }
}

/// Joins text pieces with single spaces, skipping empty ones.
fn join_words<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for part in parts.map(str::trim).filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(part);
    }
    out
}

/// The words of `text` whose characters fall within the first `fraction` of it: a word
/// counts as heard once its middle has played.
fn leading_words(text: &str, fraction: f64) -> String {
    let total = text.chars().count().max(1) as f64;
    let heard_chars = fraction.clamp(0.0, 1.0) * total;
    let mut out: Vec<&str> = Vec::new();
    let mut offset = 0usize;
    for word in text.split_inclusive(char::is_whitespace) {
        let len = word.chars().count();
        let middle = offset as f64 + word.trim_end().chars().count() as f64 / 2.0;
        if middle > heard_chars {
            break;
        }
        out.push(word.trim());
        offset += len;
    }
    join_words(out.into_iter())
}

/// Why audio could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The audio's rate cannot be converted to the call's.
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

/// A barge-in that has stopped playback but may still be undone.
#[derive(Debug, Clone)]
struct Paused {
    heard: Heard,
    /// Where the interrupted utterance resumes (sample in it).
    resume_at: usize,
}

/// The egress ledger of one call.
#[derive(Debug)]
pub struct Egress {
    format: MediaFormat,
    config: EgressConfig,
    chunk_samples: usize,
    min_chunk_samples: usize,
    /// Payload sizes must be a multiple of this many samples (Exotel: 320 bytes).
    multiple_samples: usize,
    max_lead_samples: usize,
    mark_timeout_samples: u64,
    ids: UtteranceIds,
    queue: VecDeque<Utterance>,
    in_flight: VecDeque<InFlight>,
    paused: Option<Paused>,
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
    /// A ledger for a stream of `format` whose payloads must obey `rules`; utterance ids come
    /// from `ids` (shared with the call's agent).
    pub fn new(
        format: MediaFormat,
        rules: ChunkRules,
        config: EgressConfig,
        ids: UtteranceIds,
    ) -> Self {
        let bps = format.encoding.bytes_per_sample().max(1);
        let rate = format.sample_rate;
        let wanted_bytes = ms_to_samples(u64::from(config.chunk_ms), rate) as usize * bps;
        let multiple = rules.multiple_of.max(1);
        let rounded = wanted_bytes.div_ceil(multiple) * multiple;
        let chunk_bytes = rounded.clamp(rules.min_bytes.max(bps), rules.max_bytes.max(bps));
        let chunk_samples = (chunk_bytes / bps).max(1);
        let multiple_samples = multiple.div_ceil(bps).max(1);
        let min_chunk_samples =
            rules.min_bytes.div_ceil(bps).div_ceil(multiple_samples) * multiple_samples;
        let max_lead_samples =
            (ms_to_samples(u64::from(config.max_lead_ms), rate) as usize).max(2 * chunk_samples);
        Egress {
            format,
            config,
            chunk_samples,
            min_chunk_samples,
            multiple_samples,
            max_lead_samples,
            mark_timeout_samples: ms_to_samples(u64::from(config.mark_timeout_ms), rate),
            ids,
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            paused: None,
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

    /// Queues whole speech after what is already queued; returns its new id.
    pub fn enqueue(&mut self, speech: Speech) -> Result<UtteranceId, EgressError> {
        let id = self.ids.next();
        self.open(id);
        if let Some(text) = speech.text.as_deref() {
            self.text(id, text);
        }
        let appended = self.append(id, &speech.pcm, speech.sample_rate);
        self.close(id);
        appended.map(|_| id)
    }

    /// Opens a streamed utterance `id` (from the call's [`UtteranceIds`]) after whatever is
    /// queued; audio follows with [`append`](Self::append), the end with
    /// [`close`](Self::close).
    pub fn open(&mut self, id: UtteranceId) {
        if self.queue.iter().any(|u| u.id == id) {
            return;
        }
        self.queue.push_back(Utterance::new(id));
    }

    /// Whether utterance `id` is queued or playing.
    pub fn has(&self, id: UtteranceId) -> bool {
        self.queue.iter().any(|u| u.id == id)
    }

    /// Appends audio at `rate` to open utterance `id`; returns false if the utterance is gone
    /// (cleared or cancelled: the audio is stale and dropped).
    pub fn append(&mut self, id: UtteranceId, pcm: &[i16], rate: u32) -> Result<bool, EgressError> {
        let target = self.format.sample_rate;
        let Some(u) = self.queue.iter_mut().find(|u| u.id == id && u.open) else {
            return Ok(false);
        };
        if rate == target {
            u.pcm.extend_from_slice(pcm);
            return Ok(true);
        }
        if u.resampler.as_ref().is_none_or(|(r, _)| *r != rate) {
            u.resampler = Some((rate, Resampler::new(rate, target)?));
        }
        if let Some((_, resampler)) = u.resampler.as_mut() {
            resampler.process(pcm, &mut u.pcm);
        }
        Ok(true)
    }

    /// Says that the audio appended to `id` from now on speaks `text` (for heard-text
    /// trimming on barge-in).
    pub fn text(&mut self, id: UtteranceId, text: &str) {
        if let Some(u) = self.queue.iter_mut().find(|u| u.id == id && u.open) {
            let start = u.pcm.len();
            if u.spans.last().is_some_and(|s| s.start == start) {
                if let Some(last) = u.spans.last_mut() {
                    last.text.push(' ');
                    last.text.push_str(text);
                }
            } else {
                u.spans.push(TextSpan {
                    start,
                    text: text.to_owned(),
                });
            }
        }
    }

    /// Ends utterance `id`: no more audio will come. Returns true if it has now played to its
    /// end (it was empty or everything had played already), and drops it.
    pub fn close(&mut self, id: UtteranceId) -> bool {
        let Some(pos) = self.queue.iter().position(|u| u.id == id) else {
            return false;
        };
        let u = &mut self.queue[pos];
        if let Some((_, mut resampler)) = u.resampler.take() {
            resampler.flush(&mut u.pcm);
        }
        u.open = false;
        let played_out = u.done() && !self.in_flight.iter().any(|c| c.utterance == id);
        if played_out {
            self.queue.remove(pos);
        }
        played_out
    }

    /// Drops utterance `id` if it has not started playing; returns whether it was dropped.
    pub fn cancel_unstarted(&mut self, id: UtteranceId) -> bool {
        match self.queue.iter().position(|u| u.id == id) {
            Some(pos) if self.queue[pos].sent == 0 => {
                self.queue.remove(pos);
                true
            }
            _ => false,
        }
    }

    /// Whether the bot has audio queued or playing (an open utterance still waiting for its
    /// first audio does not count).
    pub fn is_speaking(&self) -> bool {
        !self.in_flight.is_empty() || self.queue.iter().any(|u| u.sent < u.pcm.len())
    }

    /// Whether playback is paused by a barge-in that may still be undone.
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
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
        if self.paused.is_none() {
            while let Some(chunk) = self.next_chunk(now) {
                out.push(chunk);
            }
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
        let idle = self.in_flight.is_empty();
        if !idle && lead + self.chunk_samples > self.max_lead_samples {
            return None;
        }
        let rate = self.format.sample_rate;
        // Play in order: the first utterance not fully sent (an open one waits for audio).
        let utterance = self
            .queue
            .iter_mut()
            .find(|u| u.open || u.sent < u.pcm.len())?;
        let unsent = utterance.pcm.len() - utterance.sent;
        if unsent == 0 {
            return None;
        }
        if utterance.open && unsent < self.chunk_samples {
            // Streaming: wait for a whole chunk unless the carrier is about to run dry.
            if !idle || unsent < self.min_chunk_samples {
                return None;
            }
        }
        let mut take = self.chunk_samples.min(unsent);
        if utterance.open && take < self.chunk_samples {
            // A partial chunk of a stream: whole payload multiples only, the rest waits.
            take -= take % self.multiple_samples;
            if take == 0 {
                return None;
            }
        }
        let mut pcm = utterance.pcm[utterance.sent..utterance.sent + take].to_vec();
        let padded = take
            .div_ceil(self.multiple_samples)
            .saturating_mul(self.multiple_samples)
            .max(self.min_chunk_samples);
        pcm.resize(padded, 0);
        let index = utterance.next_index;
        let first = index == 0;
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
        if utterance == 0 || !self.ids.issued(utterance) {
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
            let last_in_flight = !self
                .in_flight
                .iter()
                .any(|c| c.utterance == chunk.utterance);
            if let Some(pos) = self.queue.iter().position(|u| u.id == chunk.utterance) {
                let u = &mut self.queue[pos];
                u.played += chunk.samples;
                played_ms = samples_to_ms(u.played as u64, rate);
                if u.done() && last_in_flight {
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

    /// How much of the current utterance the caller has heard at `now` (samples), and the
    /// record of it.
    fn heard_now(&self, now: u64) -> Option<(usize, Heard)> {
        let rate = self.format.sample_rate;
        let current = self.current_utterance()?;
        let u = self.queue.iter().find(|u| u.id == current)?;
        let partial = self
            .in_flight
            .front()
            .filter(|c| c.utterance == current && now > c.start)
            .map(|c| ((now - c.start) as usize).min(c.samples))
            .unwrap_or(0);
        let heard = (u.played + partial).min(u.pcm.len());
        Some((
            heard,
            Heard {
                utterance: current,
                heard_ms: samples_to_ms(heard as u64, rate),
                sent_ms: samples_to_ms(u.sent as u64, rate),
                total_ms: samples_to_ms(u.pcm.len() as u64, rate),
                heard_text: u.heard_text(heard),
                text: u.text(),
            },
        ))
    }

    /// Drops everything queued and in flight (after a `clear` has been sent) at `now`, and
    /// reports how much of the utterance that was playing the caller heard. After a
    /// [`pause`](Self::pause), reports what was heard when playback paused.
    pub fn clear(&mut self, now: u64) -> Option<Heard> {
        let heard = match self.paused.take() {
            Some(paused) => Some(paused.heard),
            None => self.heard_now(now).map(|(_, heard)| heard),
        };
        self.queue.clear();
        self.in_flight.clear();
        self.cursor = now;
        heard
    }

    /// Stops playback at `now` (after a `clear` has been sent) but keeps the unplayed audio,
    /// so a barge-in that turns out to be noise or a backchannel can
    /// [`resume`](Self::resume). Returns what the caller heard, or `None` if nothing was
    /// playing.
    pub fn pause(&mut self, now: u64) -> Option<Heard> {
        if self.paused.is_some() {
            return self.paused.as_ref().map(|p| p.heard.clone());
        }
        let (heard_samples, heard) = self.heard_now(now)?;
        let rewind = ms_to_samples(
            u64::from(self.config.resume_rewind_ms),
            self.format.sample_rate,
        ) as usize;
        let current = heard.utterance;
        let mut resume_at = heard_samples;
        for u in self.queue.iter_mut() {
            if u.id == current {
                if let Some(start) = u.span_start_at(heard_samples)
                    && heard_samples - start <= rewind
                {
                    resume_at = start;
                }
                u.played = heard_samples;
                u.sent = heard_samples;
            } else {
                // Later utterances replay from what was confirmed.
                u.sent = u.played;
            }
        }
        self.in_flight.clear();
        self.cursor = now;
        self.paused = Some(Paused {
            heard: heard.clone(),
            resume_at,
        });
        Some(heard)
    }

    /// Undoes a [`pause`](Self::pause): playback continues from the start of the interrupted
    /// text segment (or the cut). Returns false if nothing was paused.
    pub fn resume(&mut self, now: u64) -> bool {
        let Some(paused) = self.paused.take() else {
            return false;
        };
        if let Some(u) = self
            .queue
            .iter_mut()
            .find(|u| u.id == paused.heard.utterance)
        {
            u.sent = paused.resume_at.min(u.pcm.len());
            u.played = u.sent;
        }
        self.cursor = now;
        true
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
        let mut egress = Egress::new(
            format,
            rules,
            EgressConfig::default(),
            UtteranceIds::default(),
        );
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
            let mut egress = Egress::new(
                format,
                rules,
                EgressConfig::default(),
                UtteranceIds::default(),
            );
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
        let egress = Egress::new(
            format,
            rules,
            EgressConfig::default(),
            UtteranceIds::default(),
        );
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
        let mut egress = Egress::new(
            format,
            rules,
            EgressConfig::default(),
            UtteranceIds::default(),
        );
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
                total_ms: 2000,
                heard_text: None,
                text: None,
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
        let mut egress = Egress::new(
            format,
            rules,
            EgressConfig::default(),
            UtteranceIds::default(),
        );
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
        let mut egress = Egress::new(
            format,
            rules,
            EgressConfig::default(),
            UtteranceIds::default(),
        );
        egress.enqueue(speech(1000, 16000)).unwrap();
        let total: usize = egress.queue.iter().map(|u| u.pcm.len()).sum();
        assert!((7900..=8200).contains(&total), "{total}");
    }

    #[test]
    fn empty_speech_queues_nothing() {
        let (format, rules) = twilio();
        let mut egress = Egress::new(
            format,
            rules,
            EgressConfig::default(),
            UtteranceIds::default(),
        );
        egress.enqueue(Speech::pcm(vec![], 8000)).unwrap();
        assert!(!egress.is_speaking());
        assert_eq!(egress.clear(0), None);
    }
    fn play_out(egress: &mut Egress, mut now: u64) -> (u64, Vec<OutChunk>) {
        let mut all = Vec::new();
        loop {
            let mut out = Vec::new();
            egress.poll(now, &mut out);
            all.extend(out);
            let Some(front) = egress.in_flight.front().cloned() else {
                return (now, all);
            };
            now = front.end;
            egress.on_mark(&mark_name(front.utterance, front.index), now);
        }
    }

    #[test]
    fn a_streamed_utterance_plays_in_order_and_finishes_only_when_closed() {
        let (format, rules) = twilio();
        let ids = UtteranceIds::default();
        let mut egress = Egress::new(format, rules, EgressConfig::default(), ids.clone());
        let first = ids.next();
        let second = ids.next();
        egress.open(first);
        egress.open(second);
        // The second's audio is ready first, but the first plays first.
        egress.append(second, &vec![9; 800], 8000).unwrap();
        let mut out = Vec::new();
        egress.poll(0, &mut out);
        assert!(
            out.is_empty(),
            "nothing may overtake the open first utterance"
        );
        assert!(!egress.is_speaking() || egress.current_utterance() == Some(first));
        // A short first piece goes at once when the carrier is idle (fast first audio).
        egress.append(first, &vec![1; 400], 8000).unwrap();
        egress.poll(0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].utterance, out[0].wire.len()), (first, 400));
        // The ledger then waits for whole chunks while audio is in flight.
        egress.append(first, &vec![1; 500], 8000).unwrap();
        out.clear();
        egress.poll(100, &mut out);
        assert!(out.is_empty());
        assert!(!egress.close(first), "still playing");
        let (_, rest) = play_out(&mut egress, 400);
        let order: Vec<u64> = rest.iter().map(|c| c.utterance).collect();
        assert!(
            order.starts_with(&[first]) && order.ends_with(&[second]),
            "{order:?}"
        );
        assert!(egress.has(second), "the second is open: not finished");
        assert!(
            egress.close(second),
            "closing after it played out finishes it"
        );
        assert!(!egress.is_speaking());
    }

    #[test]
    fn exotel_streamed_pieces_of_any_length_obey_the_chunk_rules() {
        let (format, rules) = exotel(8000);
        let ids = UtteranceIds::default();
        let mut egress = Egress::new(format, rules, EgressConfig::default(), ids.clone());
        let id = ids.next();
        egress.open(id);
        let mut now = 0;
        let mut all = Vec::new();
        for piece in [333usize, 1777, 91, 2500, 1203] {
            egress.append(id, &vec![100; piece], 8000).unwrap();
            let (t, out) = play_out(&mut egress, now);
            now = t;
            all.extend(out);
        }
        egress.close(id);
        let (_, out) = play_out(&mut egress, now);
        all.extend(out);
        let real: usize = all
            .iter()
            .map(|c| c.pcm.iter().filter(|s| **s != 0).count())
            .sum();
        assert_eq!(
            real,
            333 + 1777 + 91 + 2500 + 1203,
            "every sample sent once"
        );
        for chunk in &all {
            assert!(rules.allows(chunk.wire.len()), "{} bytes", chunk.wire.len());
        }
    }

    #[test]
    fn heard_text_follows_the_spans_and_cuts_at_words() {
        assert_eq!(leading_words("one two three four", 0.0), "");
        assert_eq!(leading_words("one two three four", 0.5), "one two");
        assert_eq!(
            leading_words("one two three four", 1.0),
            "one two three four"
        );
        let (format, rules) = twilio();
        let ids = UtteranceIds::default();
        let mut egress = Egress::new(format, rules, EgressConfig::default(), ids.clone());
        let id = ids.next();
        egress.open(id);
        egress.text(id, "Sure, I can help.");
        egress.append(id, &vec![5; 8000], 8000).unwrap();
        egress.text(id, "What day suits you best?");
        egress.append(id, &vec![5; 8000], 8000).unwrap();
        egress.close(id);
        let mut out = Vec::new();
        egress.poll(0, &mut out);
        // Play through 1.5 s: the first clause whole, half of the second.
        let mut now = 0;
        while now < 12_000 {
            let front = egress.in_flight.front().cloned().unwrap();
            now = front.end;
            egress.on_mark(&mark_name(front.utterance, front.index), now);
            egress.poll(now, &mut out);
        }
        let heard = egress.clear(now).unwrap();
        assert_eq!(heard.heard_ms, 1500);
        assert_eq!(
            heard.heard_text.as_deref(),
            Some("Sure, I can help. What day suits")
        );
        assert_eq!(
            heard.text.as_deref(),
            Some("Sure, I can help. What day suits you best?")
        );
    }

    #[test]
    fn pause_then_resume_replays_the_interrupted_clause_and_marks_stay_unique() {
        let (format, rules) = twilio();
        let ids = UtteranceIds::default();
        let mut egress = Egress::new(format, rules, EgressConfig::default(), ids.clone());
        let id = ids.next();
        egress.open(id);
        egress.text(id, "First clause.");
        egress.append(id, &vec![5; 4000], 8000).unwrap();
        egress.text(id, "Second clause is longer.");
        egress.append(id, &vec![6; 8000], 8000).unwrap();
        egress.close(id);
        let mut out = Vec::new();
        egress.poll(0, &mut out);
        let mut now = 0;
        while now < 4800 {
            let front = egress.in_flight.front().cloned().unwrap();
            now = front.end;
            egress.on_mark(&mark_name(front.utterance, front.index), now);
            egress.poll(now, &mut out);
        }
        let sent_marks: Vec<String> = out.iter().map(|c| c.mark.clone()).collect();
        let heard = egress.pause(now + 200).unwrap();
        assert_eq!(
            heard.heard_ms, 625,
            "600 ms confirmed + 25 ms into the next chunk"
        );
        assert!(egress.is_paused() && egress.is_speaking());
        let mut none = Vec::new();
        egress.poll(now + 400, &mut none);
        assert!(none.is_empty(), "nothing plays while paused");
        // Late marks of the cleared chunks are stale.
        assert_eq!(
            egress.on_mark(sent_marks.last().unwrap(), now + 400),
            MarkOutcome::Stale
        );
        assert!(egress.resume(now + 400));
        let mut resumed = Vec::new();
        egress.poll(now + 400, &mut resumed);
        // Replays from the start of the second clause (sample 4000), with new mark names.
        assert_eq!(resumed[0].pcm[0], 6);
        assert!(resumed.iter().all(|c| !sent_marks.contains(&c.mark)));
        let (_, rest) = play_out(&mut egress, now + 400);
        let total: usize = resumed.iter().chain(rest.iter()).map(|c| c.pcm.len()).sum();
        assert_eq!(total, 8000, "the whole second clause, once");
        assert!(!egress.is_speaking());
    }

    #[test]
    fn clear_after_pause_reports_what_was_heard_at_the_pause() {
        let (format, rules) = twilio();
        let ids = UtteranceIds::default();
        let mut egress = Egress::new(format, rules, EgressConfig::default(), ids.clone());
        let id = ids.next();
        egress.open(id);
        egress.append(id, &vec![5; 8000], 8000).unwrap();
        let mut out = Vec::new();
        egress.poll(0, &mut out);
        egress.on_mark(&mark_name(id, 0), 800);
        let paused = egress.pause(900).unwrap();
        let cleared = egress.clear(5000).unwrap();
        assert_eq!(paused, cleared);
        assert_eq!(cleared.heard_ms, 112);
        assert!(!egress.is_speaking() && !egress.is_paused());
        // Audio for the dropped utterance is refused.
        assert!(!egress.append(id, &[1; 10], 8000).unwrap());
    }
}
