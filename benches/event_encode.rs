//! CallEvents, from the media path to the wire: `CallRecorder::record` (what the media path
//! pays: a timestamp and a `try_send`), the store writer's encoding of an event into a row
//! (on the writer task, off the media path), and the protobuf encoding of a page of events
//! for the control API (on request, off the media path).
//!
//! The event is `mark_played`, the most frequent one (one per 100 ms of bot audio), and
//! `barge_in`, one of the largest.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use tokio::sync::mpsc;
use voicegw::call::CallId;
use voicegw::call::agent::Heard;
use voicegw::call::events::{CallEvent, CallEventKind, CallRecorder, EventSink};
use voicegw::control::events::{CallEventView, json_to_proto};
use voicegw::store::calls::EventRow;

fn mark_played() -> CallEventKind {
    CallEventKind::MarkPlayed {
        utterance: 7,
        chunk: 12,
        played_ms: 1_300,
    }
}

fn barge_in() -> CallEventKind {
    CallEventKind::BargeIn(Heard {
        utterance: 7,
        heard_ms: 1_340,
        sent_ms: 1_600,
        total_ms: 4_200,
        heard_text: Some("Thanks for calling Bayview Dental, your".to_owned()),
        text: Some(
            "Thanks for calling Bayview Dental, your appointment is on Tuesday at ten.".to_owned(),
        ),
    })
}

fn event(kind: CallEventKind, seq: u64) -> CallEvent {
    CallEvent {
        call_id: CallId::new(),
        seq,
        at_us: 1_763_700_000_000_000 + seq * 20_000,
        kind,
    }
}

/// A stored event as `voicegw.v1.CallEvent`, as the control API makes it.
fn proto(view: &CallEventView) -> voicegw::proto::v1::CallEvent {
    let data = match json_to_proto(&view.data).kind {
        Some(prost_types::value::Kind::StructValue(s)) => Some(s),
        _ => Some(prost_types::Struct::default()),
    };
    voicegw::proto::v1::CallEvent {
        call_id: view.call_id.clone(),
        seq: view.seq,
        at_us: view.at_us,
        r#type: view.kind.clone(),
        data,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_encode");
    group.throughput(Throughput::Elements(1));

    // The media path: record into a sink whose writer keeps up (the queue is drained
    // outside the timed part, in batches of 1 000 like a writer would take them).
    for (name, kind) in [("mark_played", mark_played()), ("barge_in", barge_in())] {
        let (tx, mut rx) = mpsc::channel::<CallEvent>(4_096);
        let mut recorder = CallRecorder::new(CallId::new(), EventSink::new(tx, None));
        recorder.record(kind.clone());
        assert!(rx.try_recv().is_ok_and(|e| e.seq == 1 && e.kind == kind));
        group.bench_function(format!("record/{name}"), |b| {
            b.iter_batched(
                || {
                    while rx.try_recv().is_ok() {}
                    kind.clone()
                },
                |kind| recorder.record(kind),
                BatchSize::NumIterations(1_000),
            )
        });
        assert!(
            rx.try_recv().is_ok(),
            "the recorded events reached the queue"
        );
    }

    // The writer: an event into a stored row (JSON of its fields).
    for (name, kind) in [("mark_played", mark_played()), ("barge_in", barge_in())] {
        let e = event(kind, 42);
        let row = EventRow::from_event(&e).expect("events are storable");
        assert_eq!(row.kind, name);
        group.bench_function(format!("row/{name}"), |b| {
            b.iter(|| black_box(EventRow::from_event(black_box(&e))))
        });
    }

    // The control API: a page of 100 stored events as `voicegw.v1.CallEventList`, built
    // the way the API builds it (fields as a protobuf Struct).
    let rows: Vec<EventRow> = (0..100)
        .map(|i| {
            let kind = if i % 10 == 9 {
                barge_in()
            } else {
                mark_played()
            };
            EventRow::from_event(&event(kind, i + 1)).expect("events are storable")
        })
        .collect();
    let views: Vec<CallEventView> = rows.iter().map(CallEventView::of).collect();
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("proto/page_of_100", |b| {
        b.iter(|| {
            let list = voicegw::proto::v1::CallEventList {
                events: views.iter().map(proto).collect(),
                next_cursor: Some("1763700000020000.100".to_owned()),
            };
            black_box(list.encode_to_vec())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
