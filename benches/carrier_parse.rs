//! Parse / encode cost of the carrier protocol cores (the per-frame hot path).

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voicegw::carrier::exotel::ExotelCore;
use voicegw::carrier::twilio::TwilioCore;
use voicegw::carrier::{CarrierEvent, Outbound};

const MZ: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

fn twilio() -> TwilioCore {
    let mut core = TwilioCore::new();
    let start = format!(
        r#"{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"AC25e16e9a716a4a1786a7c83f58e30482","streamSid":"{MZ}","callSid":"CA8a0bc5c1e3b0f4e2d3c4b5a697887766","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{}}}},"streamSid":"{MZ}"}}"#
    );
    assert!(matches!(core.parse(&start), Ok(CarrierEvent::Start(_))));
    core
}

fn exotel() -> ExotelCore {
    let mut core = ExotelCore::new();
    let start = format!(
        r#"{{"event":"start","sequence_number":"1","stream_sid":"{MZ}","start":{{"stream_sid":"{MZ}","call_sid":"CA8a0bc5c1e3b0f4e2d3c4b5a697887766","account_sid":"AC25e16e9a716a4a1786a7c83f58e30482","from":"+919876543210","to":"+918047491899","custom_parameters":{{}},"media_format":{{"encoding":"audio/x-raw","sample_rate":"8000","bit_rate":"16"}}}}}}"#
    );
    assert!(matches!(core.parse(&start), Ok(CarrierEvent::Start(_))));
    core
}

fn audio(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 37 % 256) as u8).collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("carrier_parse");

    let mut core = twilio();
    let frame = format!(
        r#"{{"event":"media","sequenceNumber":"2","media":{{"track":"inbound","chunk":"1","timestamp":"5","payload":"{}"}},"streamSid":"{MZ}"}}"#,
        STANDARD.encode(audio(160))
    );
    group.throughput(Throughput::Elements(1));
    group.bench_function("twilio_media_160B_mulaw", |b| {
        b.iter(|| core.parse(black_box(&frame)))
    });

    for len in [320usize, 1600] {
        let mut core = exotel();
        let frame = format!(
            r#"{{"event":"media","sequence_number":"3","stream_sid":"{MZ}","media":{{"chunk":"2","timestamp":"200","payload":"{}"}}}}"#,
            STANDARD.encode(audio(len))
        );
        group.bench_function(format!("exotel_media_{len}B_slin"), |b| {
            b.iter(|| core.parse(black_box(&frame)))
        });
    }

    let twilio = twilio();
    let pcm = audio(800); // 100 ms of 8 kHz μ-law
    group.bench_function("twilio_encode_100ms_media", |b| {
        b.iter(|| twilio.encode(Outbound::Media(black_box(&pcm))))
    });
    let exotel = exotel();
    let pcm = audio(3200); // 200 ms, Exotel's minimum chunk at 8 kHz slin
    group.bench_function("exotel_encode_3200B_media", |b| {
        b.iter(|| exotel.encode(Outbound::Media(black_box(&pcm))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
