//! Mapping between a recognizer connection's clock and the call's inbound timeline.
//!
//! A streaming recognizer timestamps its results in seconds of audio received **on that
//! connection**. The session does not send the silences it gates, and a reconnect starts the
//! provider's clock at zero again (after replaying buffered audio), so provider time and call
//! time drift apart. [`Timeline`] records, for every stretch of audio sent, where it sits on
//! both clocks, and converts provider times back to call-timeline milliseconds.
//!
//! Provider positions are kept in samples (exact for any chunk size); call positions in ms.

use std::collections::VecDeque;

/// Spans kept before the oldest are forgotten (each gap in the sent audio starts one).
const MAX_SPANS: usize = 4096;
/// Call positions within this many ms of the expected continuation extend the current span
/// (absorbs rounding of chunk durations to whole ms).
const CONTIGUOUS_SLACK_MS: u64 = 1;

/// One contiguous stretch of sent audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// Provider position (samples since the connection opened) of the first sample.
    provider_start: u64,
    /// Samples in the span.
    len: u64,
    /// Call-timeline ms of the first sample.
    call_start_ms: u64,
}

/// Provider-clock ↔ call-clock mapping for one connection at a time.
#[derive(Debug, Clone)]
pub struct Timeline {
    sample_rate: u64,
    spans: VecDeque<Span>,
    sent: u64,
}

impl Timeline {
    /// An empty mapping for audio at `sample_rate` Hz (a rate of 0 is treated as 1).
    pub fn new(sample_rate: u32) -> Self {
        Timeline {
            sample_rate: u64::from(sample_rate.max(1)),
            spans: VecDeque::new(),
            sent: 0,
        }
    }

    /// Forgets everything: a new connection starts its clock at zero.
    pub fn reset(&mut self) {
        self.spans.clear();
        self.sent = 0;
    }

    /// Samples sent on the current connection so far (the provider clock's "now").
    pub fn sent_samples(&self) -> u64 {
        self.sent
    }

    /// Converts samples to ms at this timeline's rate (rounded down).
    pub fn samples_to_ms(&self, samples: u64) -> u64 {
        samples.saturating_mul(1000) / self.sample_rate
    }

    /// Converts provider seconds (as a result carries them) to samples; negative, NaN or
    /// absurd values saturate instead of panicking.
    pub fn seconds_to_samples(&self, seconds: f64) -> u64 {
        if seconds.is_finite() && seconds > 0.0 {
            // `as` saturates for out-of-range floats.
            (seconds * self.sample_rate as f64).round() as u64
        } else {
            0
        }
    }

    /// Records that `samples` samples starting at call-timeline `call_at_ms` were sent next.
    /// Returns the provider position just after them.
    pub fn push(&mut self, call_at_ms: u64, samples: u64) -> u64 {
        if samples == 0 {
            return self.sent;
        }
        let extend = self.spans.back().is_some_and(|last| {
            let expected = last.call_start_ms + self.samples_to_ms(last.len);
            last.provider_start + last.len == self.sent
                && call_at_ms.abs_diff(expected) <= CONTIGUOUS_SLACK_MS
        });
        match self.spans.back_mut() {
            Some(last) if extend => last.len += samples,
            _ => {
                self.spans.push_back(Span {
                    provider_start: self.sent,
                    len: samples,
                    call_start_ms: call_at_ms,
                });
                if self.spans.len() > MAX_SPANS {
                    self.spans.pop_front();
                }
            }
        }
        self.sent += samples;
        self.sent
    }

    /// Call-timeline ms of provider position `provider_samples`, for the **start** of
    /// something: at the boundary between two spans it maps to the later span's start.
    pub fn start_to_call_ms(&self, provider_samples: u64) -> u64 {
        self.map(provider_samples, false)
    }

    /// Call-timeline ms of provider position `provider_samples`, for the **end** of
    /// something: at the boundary between two spans it maps to the earlier span's end.
    pub fn end_to_call_ms(&self, provider_samples: u64) -> u64 {
        self.map(provider_samples, true)
    }

    /// Provider seconds → call ms, start semantics.
    pub fn start_secs_to_call_ms(&self, seconds: f64) -> u64 {
        self.start_to_call_ms(self.seconds_to_samples(seconds))
    }

    /// Provider seconds → call ms, end semantics.
    pub fn end_secs_to_call_ms(&self, seconds: f64) -> u64 {
        self.end_to_call_ms(self.seconds_to_samples(seconds))
    }

    fn map(&self, p: u64, end: bool) -> u64 {
        let Some(first) = self.spans.front() else {
            // Nothing sent yet: the provider clock and call clock both start here.
            return self.samples_to_ms(p);
        };
        if p <= first.provider_start {
            return first.call_start_ms;
        }
        // Spans are sorted by provider_start and contiguous on the provider clock.
        let idx = self.spans.partition_point(|s| {
            if end {
                s.provider_start < p
            } else {
                s.provider_start <= p
            }
        });
        // idx >= 1 because p > first.provider_start.
        let span = self.spans[idx.saturating_sub(1)];
        // Past the last span (a time beyond the audio sent): extrapolate on the call clock.
        span.call_start_ms
            .saturating_add(self.samples_to_ms(p - span.provider_start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8000;
    /// Samples in `ms` at 8 kHz.
    fn s(ms: u64) -> u64 {
        ms * 8
    }

    #[test]
    fn contiguous_audio_maps_one_to_one_with_an_offset() {
        let mut t = Timeline::new(RATE);
        for i in 0..50 {
            t.push(1000 + i * 20, s(20));
        }
        assert_eq!(t.spans.len(), 1);
        assert_eq!(t.start_secs_to_call_ms(0.0), 1000);
        assert_eq!(t.start_secs_to_call_ms(0.5), 1500);
        assert_eq!(t.end_secs_to_call_ms(1.0), 2000);
    }

    #[test]
    fn gaps_in_sent_audio_are_skipped_on_the_provider_clock() {
        let mut t = Timeline::new(RATE);
        // 0..1000 ms of the call, then a 4 s silence not sent, then 5000..6000.
        for i in 0..50 {
            t.push(i * 20, s(20));
        }
        for i in 0..50 {
            t.push(5000 + i * 20, s(20));
        }
        assert_eq!(t.spans.len(), 2);
        assert_eq!(t.sent_samples(), s(2000));
        assert_eq!(t.start_secs_to_call_ms(0.25), 250);
        // Provider 1.0 s is the boundary: a start is in the second span, an end in the first.
        assert_eq!(t.start_secs_to_call_ms(1.0), 5000);
        assert_eq!(t.end_secs_to_call_ms(1.0), 1000);
        assert_eq!(t.start_secs_to_call_ms(1.5), 5500);
        assert_eq!(t.end_secs_to_call_ms(2.0), 6000);
        // Beyond the audio sent: extrapolated from the last span.
        assert_eq!(t.end_secs_to_call_ms(2.5), 6500);
    }

    #[test]
    fn reset_restarts_the_provider_clock_and_replayed_audio_keeps_call_positions() {
        let mut t = Timeline::new(RATE);
        for i in 0..100 {
            t.push(i * 20, s(20));
        }
        assert_eq!(t.start_secs_to_call_ms(1.5), 1500);
        // Reconnect: the replay starts at call 1200 ms (audio after the last final).
        t.reset();
        assert_eq!(t.sent_samples(), 0);
        for i in 0..40 {
            t.push(1200 + i * 20, s(20));
        }
        // Then live audio after a gap.
        t.push(3000, s(20));
        assert_eq!(t.start_secs_to_call_ms(0.0), 1200);
        assert_eq!(t.start_secs_to_call_ms(0.3), 1500);
        assert_eq!(t.end_secs_to_call_ms(0.8), 2000);
        assert_eq!(t.start_secs_to_call_ms(0.8), 3000);
        assert_eq!(t.end_secs_to_call_ms(0.82), 3020);
    }

    #[test]
    fn odd_chunk_sizes_and_rounding_stay_in_one_span() {
        let mut t = Timeline::new(RATE);
        // 15 samples = 1.875 ms each; call positions rounded down.
        let mut call_us = 0u64;
        for _ in 0..100 {
            t.push(call_us / 1000, 15);
            call_us += 1875;
        }
        assert_eq!(t.spans.len(), 1);
        assert_eq!(t.end_secs_to_call_ms(0.1875), 187);
    }

    #[test]
    fn bad_provider_times_do_not_panic() {
        let mut t = Timeline::new(RATE);
        assert_eq!(t.start_secs_to_call_ms(1.0), 1000);
        t.push(700, s(20));
        assert_eq!(t.start_secs_to_call_ms(-3.0), 700);
        assert_eq!(t.start_secs_to_call_ms(f64::NAN), 700);
        let far = t.end_secs_to_call_ms(f64::MAX);
        assert!(far > 700);
        t.push(900, 0);
        assert_eq!(t.sent_samples(), s(20));
    }

    #[test]
    fn span_count_is_bounded() {
        let mut t = Timeline::new(RATE);
        for i in 0..(MAX_SPANS as u64 + 10) {
            t.push(i * 100, s(20));
        }
        assert_eq!(t.spans.len(), MAX_SPANS);
        // The newest spans still map exactly.
        let last = MAX_SPANS as u64 + 9;
        assert_eq!(t.start_to_call_ms(s(20) * last), last * 100);
    }
}
