//! The whole inbound frame path, per 20 ms frame: parse the carrier's JSON text frame, decode
//! the payload once, run the VAD, consult the echo guard and feed turn-taking — what the
//! session does for every `media` message (minus the metric increments).

#[path = "support/signal.rs"]
mod signal;

use signal::speechlike;
use std::hint::black_box;

use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voicegw::audio::echo::{EchoConfig, EchoGuard};
use voicegw::audio::vad::{Vad, VadBackend, VadConfig, VadFrame};
use voicegw::audio::{Encoding, linear16};
use voicegw::call::turn::{JudgedFrame, TurnConfig, TurnEvent, TurnTaker};
use voicegw::carrier::{CarrierEvent, CarrierKind, CarrierProtocol};

/// Everything the session keeps per call for the inbound path.
struct Path {
    protocol: CarrierProtocol,
    encoding: Encoding,
    vad: Vad,
    echo: EchoGuard,
    turn: TurnTaker,
    pcm: Vec<i16>,
    frames: Vec<VadFrame>,
    events: Vec<TurnEvent>,
}

impl Path {
    fn new(kind: CarrierKind, start: &str, backend: VadBackend) -> Path {
        let mut protocol = CarrierProtocol::new(kind);
        let CarrierEvent::Start(start) = protocol.parse(start).unwrap() else {
            panic!("not a start")
        };
        let format = start.media_format;
        let config = VadConfig {
            backend,
            ..VadConfig::default()
        };
        Path {
            protocol,
            encoding: format.encoding,
            vad: Vad::new(&config, format.sample_rate).unwrap(),
            echo: EchoGuard::new(format.sample_rate, EchoConfig::default()),
            turn: TurnTaker::new(format.sample_rate, TurnConfig::default()),
            pcm: Vec::with_capacity(2048),
            frames: Vec::with_capacity(8),
            events: Vec::new(),
        }
    }

    fn frame(&mut self, text: &str) -> usize {
        let Ok(CarrierEvent::Media(media)) = self.protocol.parse(text) else {
            return 0;
        };
        self.pcm.clear();
        self.encoding.decode_into(&media.payload, &mut self.pcm);
        self.frames.clear();
        self.vad.push(&self.pcm, &mut self.frames);
        self.events.clear();
        let n = self.vad.frame_samples();
        for (i, frame) in self.frames.iter().enumerate() {
            let Some(pcm) = self.pcm.get(i * n..(i + 1) * n) else {
                break;
            };
            let echo = frame.voiced && self.echo.explains(frame.end_sample, linear16::rms(pcm));
            self.turn.push(
                JudgedFrame {
                    pcm,
                    end_sample: frame.end_sample,
                    voiced: frame.voiced,
                    echo,
                },
                false,
                &mut self.events,
            );
        }
        self.events.len()
    }
}

const TWILIO_START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC0123456789abcdef0123456789abcdef","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","callSid":"CA0123456789abcdef0123456789abcdef","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}"#;
const EXOTEL_START: &str = r#"{"event":"start","sequence_number":"1","stream_sid":"s1","start":{"stream_sid":"s1","call_sid":"c1","account_sid":"a1","from":"+919876543210","to":"+918047491899","custom_parameters":{},"media_format":{"encoding":"audio/x-raw","sample_rate":"8000","bit_rate":"16"}}}"#;

fn twilio_frames(pcm: &[i16]) -> Vec<String> {
    pcm.chunks_exact(160)
        .enumerate()
        .map(|(i, chunk)| {
            let mut bytes = Vec::new();
            Encoding::Mulaw.encode_into(chunk, &mut bytes);
            format!(
                r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":"{}"}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}}"#,
                i + 2,
                i + 1,
                i * 20,
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            )
        })
        .collect()
}

fn exotel_frames(pcm: &[i16], samples: usize) -> Vec<String> {
    pcm.chunks_exact(samples)
        .enumerate()
        .map(|(i, chunk)| {
            let mut bytes = Vec::new();
            Encoding::Linear16.encode_into(chunk, &mut bytes);
            format!(
                r#"{{"event":"media","sequence_number":"{}","stream_sid":"s1","media":{{"chunk":"{}","timestamp":"{}","payload":"{}"}}}}"#,
                i + 2,
                i + 1,
                i * samples / 8,
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    // 10 s of speech-like audio with pauses, cycled.
    let mut pcm = speechlike(8000 * 10, 8000);
    for (i, s) in pcm.iter_mut().enumerate() {
        if (i / 8000) % 3 == 2 {
            *s = 0;
        }
    }
    let twilio = twilio_frames(&pcm);
    let exotel_20 = exotel_frames(&pcm, 160);
    let exotel_100 = exotel_frames(&pcm, 800);

    let mut group = c.benchmark_group("frame_path");
    group.throughput(Throughput::Elements(1));
    for (name, backend) in [
        ("webrtc", VadBackend::WebRtc),
        ("earshot", VadBackend::Earshot),
    ] {
        let mut path = Path::new(CarrierKind::Twilio, TWILIO_START, backend);
        let mut i = 0;
        group.bench_function(format!("twilio_20ms_mulaw/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % twilio.len();
                black_box(path.frame(black_box(&twilio[i])))
            })
        });
    }
    let mut path = Path::new(CarrierKind::Exotel, EXOTEL_START, VadBackend::WebRtc);
    let mut i = 0;
    group.bench_function("exotel_20ms_slin16/webrtc", |b| {
        b.iter(|| {
            i = (i + 1) % exotel_20.len();
            black_box(path.frame(black_box(&exotel_20[i])))
        })
    });
    let mut path = Path::new(CarrierKind::Exotel, EXOTEL_START, VadBackend::WebRtc);
    let mut i = 0;
    group.bench_function("exotel_100ms_slin16/webrtc", |b| {
        b.iter(|| {
            i = (i + 1) % exotel_100.len();
            black_box(path.frame(black_box(&exotel_100[i])))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
