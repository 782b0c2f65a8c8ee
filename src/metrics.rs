//! The Prometheus registry and the few metric families the gateway exposes on `/metrics`.
//!
//! Hot-path call sites never look a metric up by label: a call resolves its labelled children
//! once ([`CallMetrics`]) and then only touches atomics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::carrier::CarrierKind;

/// Every metric family of the gateway, registered in one [`Registry`].
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Calls whose stream has started and not yet ended.
    pub live_calls: IntGauge,
    /// WebSocket connections open (with or without a `start`).
    pub open_streams: IntGauge,
    /// Calls ended, by carrier and end reason.
    pub calls_ended: IntCounterVec,
    /// Stream upgrades refused, by carrier and reason.
    pub streams_rejected: IntCounterVec,
    /// Inbound media frames, by carrier.
    pub frames_in: IntCounterVec,
    /// Outbound media frames, by carrier.
    pub frames_out: IntCounterVec,
    /// Malformed inbound frames, by carrier and kind.
    pub bad_frames: IntCounterVec,
    /// Barge-ins (caller speech that cut the bot off), by carrier.
    pub barge_ins: IntCounterVec,
    /// Time to process one inbound media frame (decode, DTMF, VAD, turn logic), by carrier.
    pub frame_seconds: HistogramVec,
    /// Marks that never came back and were assumed played after the timeout.
    pub marks_timed_out: IntCounter,
    /// CallEvents the event sink could not take (its queue was full).
    pub events_dropped: IntCounter,
    /// Provider requests/connections, by provider (`deepgram_stt`, `openai_chat`, …) and
    /// outcome (`ok`, `retry`, `error`, `fallback`, `reconnect`, …).
    pub provider_calls: IntCounterVec,
    /// Latency of each conversation stage, by stage (`stt_final`, `llm_first_token`,
    /// `tts_first_byte`, `response`, `gateway`, `barge_in_clear`).
    pub stage_seconds: HistogramVec,
    /// Carrier webhooks, by carrier, kind (`voice`, `status`, `amd`, …) and outcome
    /// (`routed`, `applied`, `unknown_number`, `unknown_call`, …).
    pub webhooks: IntCounterVec,
    /// Failed checks of the shared (Redis) CPS limiter, by carrier; calls wait meanwhile.
    pub limiter_errors: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The labelled children one call uses, resolved once at `start`.
#[derive(Clone)]
pub struct CallMetrics {
    /// Inbound media frames of this call's carrier.
    pub frames_in: IntCounter,
    /// Outbound media frames of this call's carrier.
    pub frames_out: IntCounter,
    /// Barge-ins on this call's carrier.
    pub barge_ins: IntCounter,
    /// Per-frame processing time on this call's carrier.
    pub frame_seconds: Histogram,
}

/// Histogram buckets for per-frame processing, 1 µs to 10 ms.
const FRAME_BUCKETS: &[f64] = &[
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2,
];

/// Histogram buckets for conversation stages, 1 ms to 10 s.
const STAGE_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0,
    1.25, 1.5, 2.0, 3.0, 5.0, 10.0,
];

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let live_calls = IntGauge::new("voicegw_live_calls", "Calls with a started stream")?;
        let open_streams =
            IntGauge::new("voicegw_open_streams", "Carrier WebSocket connections open")?;
        let calls_ended = IntCounterVec::new(
            Opts::new("voicegw_calls_ended_total", "Calls ended, by end reason"),
            &["carrier", "reason"],
        )?;
        let streams_rejected = IntCounterVec::new(
            Opts::new(
                "voicegw_streams_rejected_total",
                "Stream upgrades refused, by reason",
            ),
            &["carrier", "reason"],
        )?;
        let frames_in = IntCounterVec::new(
            Opts::new("voicegw_frames_in_total", "Inbound media frames"),
            &["carrier"],
        )?;
        let frames_out = IntCounterVec::new(
            Opts::new("voicegw_frames_out_total", "Outbound media frames"),
            &["carrier"],
        )?;
        let bad_frames = IntCounterVec::new(
            Opts::new("voicegw_bad_frames_total", "Malformed inbound frames"),
            &["carrier", "kind"],
        )?;
        let barge_ins = IntCounterVec::new(
            Opts::new(
                "voicegw_barge_ins_total",
                "Caller speech that interrupted the bot",
            ),
            &["carrier"],
        )?;
        let frame_seconds = HistogramVec::new(
            HistogramOpts::new(
                "voicegw_frame_processing_seconds",
                "Time to process one inbound media frame",
            )
            .buckets(FRAME_BUCKETS.to_vec()),
            &["carrier"],
        )?;
        let marks_timed_out = IntCounter::new(
            "voicegw_marks_timed_out_total",
            "Marks not echoed in time, assumed played",
        )?;
        let events_dropped = IntCounter::new(
            "voicegw_events_dropped_total",
            "CallEvents the event sink could not accept",
        )?;
        let provider_calls = IntCounterVec::new(
            Opts::new(
                "voicegw_provider_calls_total",
                "Provider requests and connections, by provider and outcome",
            ),
            &["provider", "outcome"],
        )?;
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new(
                "voicegw_stage_seconds",
                "Latency of each conversation stage",
            )
            .buckets(STAGE_BUCKETS.to_vec()),
            &["stage"],
        )?;
        registry.register(Box::new(provider_calls.clone()))?;
        registry.register(Box::new(stage_seconds.clone()))?;
        registry.register(Box::new(live_calls.clone()))?;
        registry.register(Box::new(open_streams.clone()))?;
        registry.register(Box::new(calls_ended.clone()))?;
        registry.register(Box::new(streams_rejected.clone()))?;
        registry.register(Box::new(frames_in.clone()))?;
        registry.register(Box::new(frames_out.clone()))?;
        registry.register(Box::new(bad_frames.clone()))?;
        registry.register(Box::new(barge_ins.clone()))?;
        registry.register(Box::new(frame_seconds.clone()))?;
        registry.register(Box::new(marks_timed_out.clone()))?;
        registry.register(Box::new(events_dropped.clone()))?;
        let webhooks = IntCounterVec::new(
            Opts::new(
                "voicegw_webhooks_total",
                "Carrier webhooks, by carrier, kind and outcome",
            ),
            &["carrier", "kind", "outcome"],
        )?;
        registry.register(Box::new(webhooks.clone()))?;
        let limiter_errors = IntCounterVec::new(
            Opts::new(
                "voicegw_cps_limiter_errors_total",
                "Failed shared CPS limiter checks (calls held until Redis answers), by carrier",
            ),
            &["carrier"],
        )?;
        registry.register(Box::new(limiter_errors.clone()))?;
        Ok(Metrics {
            registry,
            live_calls,
            open_streams,
            calls_ended,
            streams_rejected,
            frames_in,
            frames_out,
            bad_frames,
            barge_ins,
            frame_seconds,
            marks_timed_out,
            events_dropped,
            provider_calls,
            stage_seconds,
            webhooks,
            limiter_errors,
        })
    }

    /// Counts one provider request or connection outcome.
    pub fn provider(&self, provider: &str, outcome: &str) {
        self.provider_calls
            .with_label_values(&[provider, outcome])
            .inc();
    }

    /// Records the latency of one conversation stage.
    pub fn stage(&self, stage: &str, elapsed: std::time::Duration) {
        self.stage_seconds
            .with_label_values(&[stage])
            .observe(elapsed.as_secs_f64());
    }

    /// The children for one call on `carrier`.
    pub fn for_call(&self, carrier: CarrierKind) -> CallMetrics {
        let label = [carrier.as_str()];
        CallMetrics {
            frames_in: self.frames_in.with_label_values(&label),
            frames_out: self.frames_out.with_label_values(&label),
            barge_ins: self.barge_ins.with_label_values(&label),
            frame_seconds: self.frame_seconds.with_label_values(&label),
        }
    }

    /// Counts one malformed frame.
    pub fn bad_frame(&self, carrier: CarrierKind, kind: &str) {
        self.bad_frames
            .with_label_values(&[carrier.as_str(), kind])
            .inc();
    }

    /// The registry, for subsystems that register families of their own (the dialer).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format, for `GET /metrics`.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for I/O; a family error would be a programming bug,
        // and then an empty page is better than a panic.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_labels() {
        let metrics = Metrics::new().unwrap();
        let call = metrics.for_call(CarrierKind::Exotel);
        call.frames_in.inc();
        call.frame_seconds.observe(3e-6);
        metrics.bad_frame(CarrierKind::Twilio, "json");
        metrics.live_calls.inc();
        let text = metrics.render();
        assert!(
            text.contains("voicegw_frames_in_total{carrier=\"exotel\"} 1"),
            "{text}"
        );
        assert!(text.contains("voicegw_bad_frames_total{carrier=\"twilio\",kind=\"json\"} 1"));
        assert!(text.contains("voicegw_live_calls 1"));
        assert!(text.contains(
            "voicegw_frame_processing_seconds_bucket{carrier=\"exotel\",le=\"0.000005\"} 1"
        ));
    }
}
