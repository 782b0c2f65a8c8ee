//! Egress, the outbound hot path: cutting a TTS utterance into carrier chunks with their
//! marks, encoding each chunk as the carrier's JSON messages, and the playback ledger's
//! update on every echoed mark — what the session does for the bot's audio.
//!
//! Cases are per utterance (3 s of speech, Twilio μ-law 8 kHz and Exotel slin16 8 kHz in
//! 100 ms chunks, the default) and per mark echo.

#[path = "support/signal.rs"]
mod signal;

use signal::speechlike;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use voicegw::call::Speech;
use voicegw::call::agent::UtteranceIds;
use voicegw::call::egress::{Egress, EgressConfig, MarkOutcome, OutChunk};
use voicegw::carrier::{CarrierEvent, CarrierKind, CarrierProtocol, Outbound};

const TWILIO_START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC0123456789abcdef0123456789abcdef","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","callSid":"CA0123456789abcdef0123456789abcdef","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}"#;
const EXOTEL_START: &str = r#"{"event":"start","sequence_number":"1","stream_sid":"s1","start":{"stream_sid":"s1","call_sid":"c1","account_sid":"a1","from":"+919876543210","to":"+918047491899","custom_parameters":{},"media_format":{"encoding":"audio/x-raw","sample_rate":"8000","bit_rate":"16"}}}"#;

/// Seconds of speech per benched utterance.
const UTTERANCE_S: usize = 3;
/// Samples per 20 ms at 8 kHz.
const FRAME: u64 = 160;

/// A carrier stream after its `start`, and an empty ledger for it.
fn started(kind: CarrierKind, start: &str) -> (CarrierProtocol, Egress) {
    let mut protocol = CarrierProtocol::new(kind);
    let Ok(CarrierEvent::Start(_)) = protocol.parse(start) else {
        panic!("not a start")
    };
    let format = protocol
        .media_format()
        .expect("started stream has a format");
    let rules = protocol
        .chunk_rules()
        .expect("started stream has chunk rules");
    let egress = Egress::new(
        format,
        rules,
        EgressConfig::default(),
        UtteranceIds::default(),
    );
    (protocol, egress)
}

fn speech(pcm: &[i16]) -> Speech {
    Speech {
        pcm: pcm.to_vec(),
        sample_rate: 8000,
        text: Some("Thanks for calling. Your appointment is on Tuesday at ten.".to_owned()),
    }
}

/// Plays one utterance through the ledger the way a carrier does: poll at every 20 ms
/// frame, encode each released chunk as media + mark, echo each mark once its audio has
/// played. Returns the chunks sent (for a sanity check).
fn play_utterance(
    protocol: &CarrierProtocol,
    egress: &mut Egress,
    pcm: &[i16],
    now: &mut u64,
) -> usize {
    egress
        .enqueue(speech(pcm))
        .expect("8 kHz needs no resampling");
    let mut out: Vec<OutChunk> = Vec::new();
    let mut pending: std::collections::VecDeque<(u64, String)> = Default::default();
    let mut sent = 0;
    while egress.is_speaking() {
        *now += FRAME;
        out.clear();
        egress.poll(*now, &mut out);
        for chunk in out.drain(..) {
            let media = protocol
                .encode(Outbound::Media(&chunk.wire))
                .expect("media encodes");
            let mark = protocol
                .encode(Outbound::Mark(&chunk.mark))
                .expect("mark encodes");
            black_box((media, mark));
            pending.push_back((chunk.play_at + chunk.pcm.len() as u64, chunk.mark));
            sent += 1;
        }
        while pending.front().is_some_and(|(at, _)| *at <= *now) {
            if let Some((_, name)) = pending.pop_front() {
                black_box(egress.on_mark(&name, *now));
            }
        }
    }
    sent
}

fn bench(c: &mut Criterion) {
    let pcm = speechlike(8000 * UTTERANCE_S, 8000);
    let frames_per_utterance = (pcm.len() as u64) / FRAME;

    let mut group = c.benchmark_group("egress");
    for (name, kind, start) in [
        ("twilio", CarrierKind::Twilio, TWILIO_START),
        ("exotel", CarrierKind::Exotel, EXOTEL_START),
    ] {
        // The whole play-out of one utterance, per 20 ms frame: poll, encode media + mark,
        // apply the echoed marks.
        group.throughput(Throughput::Elements(frames_per_utterance));
        let (protocol, mut egress) = started(kind, start);
        let chunk_samples = egress.chunk_samples();
        let per_utterance = pcm.len().div_ceil(chunk_samples);
        let lead_chunks = egress.max_lead_samples() / chunk_samples;
        let mut now = 0u64;
        let chunks = play_utterance(&protocol, &mut egress, &pcm, &mut now);
        assert_eq!(chunks, per_utterance, "{name}: every chunk sent once");
        group.bench_function(format!("{name}/utterance_3s_play_out"), |b| {
            b.iter(|| {
                black_box(play_utterance(
                    &protocol,
                    &mut egress,
                    black_box(&pcm),
                    &mut now,
                ))
            })
        });

        // Chunking alone, without the JSON encoding: enqueue, then poll and confirm until
        // every chunk is out; per chunk.
        group.throughput(Throughput::Elements(per_utterance as u64));
        group.bench_function(format!("{name}/cut_into_chunks"), |b| {
            b.iter_batched(
                || {
                    let (_, mut egress) = started(kind, start);
                    egress
                        .enqueue(speech(&pcm))
                        .expect("8 kHz needs no resampling");
                    egress
                },
                |mut egress| {
                    let mut out = Vec::with_capacity(32);
                    let mut now = 0;
                    let mut marks = Vec::with_capacity(32);
                    while egress.is_speaking() {
                        now += FRAME * 5;
                        egress.poll(now, &mut out);
                        for chunk in out.drain(..) {
                            marks.push(chunk.mark);
                        }
                        if let Some(last) = marks.last() {
                            egress.on_mark(last, now);
                        }
                    }
                    black_box(marks.len())
                },
                BatchSize::SmallInput,
            )
        });

        // One mark echo with a full lead in flight (the steady state: Twilio three 100 ms
        // chunks, Exotel two 200 ms ones, its minimum being 3 200 bytes).
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}/mark_echo"), |b| {
            b.iter_batched(
                || {
                    let (_, mut egress) = started(kind, start);
                    egress
                        .enqueue(speech(&pcm))
                        .expect("8 kHz needs no resampling");
                    let mut out = Vec::new();
                    egress.poll(0, &mut out);
                    assert_eq!(
                        out.len(),
                        lead_chunks,
                        "the lead's worth of chunks in flight"
                    );
                    let first = out.swap_remove(0).mark;
                    (egress, first)
                },
                |(mut egress, mark)| {
                    let outcome = egress.on_mark(black_box(&mark), 800);
                    debug_assert!(matches!(outcome, MarkOutcome::Played { .. }));
                    black_box(outcome);
                    egress
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
