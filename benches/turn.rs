//! Turn-taking per 20 ms frame: the turn-taker's hysteresis and the turn judge, fed frames
//! the VAD has already judged (as the session does after the VAD and the echo guard), plus
//! the barge-in decisions: the interruption itself (bot speaking, 100 ms of caller speech)
//! and the backchannel check that decides whether it stands.

#[path = "support/signal.rs"]
mod signal;

use signal::speechlike;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voicegw::call::turn::{
    JudgedFrame, Judgement, TurnConfig, TurnEvent, TurnJudge, TurnTaker, is_backchannel,
};

/// Samples per 20 ms at 8 kHz.
const FRAME: usize = 160;

/// What the session keeps per call for turn-taking.
struct Turns {
    taker: TurnTaker,
    judge: TurnJudge,
    events: Vec<TurnEvent>,
    judgements: Vec<Judgement>,
    now: u64,
}

/// Counts of what one pass over a frame pattern produced.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    barge_ins: u32,
    started: u32,
    ended: u32,
    complete: u32,
}

impl Turns {
    fn new() -> Turns {
        let config = TurnConfig::default();
        Turns {
            taker: TurnTaker::new(8000, config.clone()),
            judge: TurnJudge::new(8000, &config, false),
            events: Vec::with_capacity(4),
            judgements: Vec::with_capacity(4),
            now: 0,
        }
    }

    /// One judged frame, as the session feeds it.
    fn frame(&mut self, pcm: &[i16], voiced: bool, bot_speaking: bool, seen: &mut Seen) {
        self.now += pcm.len() as u64;
        let now = self.now;
        self.events.clear();
        self.taker.push(
            JudgedFrame {
                pcm,
                end_sample: now,
                voiced,
                echo: false,
            },
            bot_speaking,
            &mut self.events,
        );
        self.judgements.clear();
        let silence = self.taker.silence_samples(now);
        self.judge
            .on_frame(now, voiced, silence, &mut self.judgements);
        for event in self.events.drain(..) {
            match event {
                TurnEvent::BargeIn { .. } => seen.barge_ins += 1,
                TurnEvent::SpeechStarted { .. } => seen.started += 1,
                TurnEvent::TurnEnded { .. } => {
                    seen.ended += 1;
                    self.judge.on_turn_ended(event, now, &mut self.judgements);
                }
            }
        }
        seen.complete += self
            .judgements
            .iter()
            .filter(|j| matches!(j, Judgement::Complete { .. }))
            .count() as u32;
    }

    /// Runs a pattern of (voiced, bot speaking) frames once.
    fn run(&mut self, voice: &[i16], silence: &[i16], pattern: &[(bool, bool)]) -> Seen {
        let mut seen = Seen::default();
        for (i, &(voiced, bot)) in pattern.iter().enumerate() {
            let pcm = if voiced {
                let at = (i * FRAME) % (voice.len() - FRAME);
                &voice[at..at + FRAME]
            } else {
                silence
            };
            self.frame(pcm, voiced, bot, &mut seen);
        }
        seen
    }
}

/// `n` frames of the same kind.
fn frames(n: usize, voiced: bool, bot: bool) -> impl Iterator<Item = (bool, bool)> {
    std::iter::repeat_n((voiced, bot), n)
}

fn bench(c: &mut Criterion) {
    let voice = speechlike(8000 * 4, 8000);
    let silence = vec![0i16; FRAME];

    // A caller turn: 0.8 s quiet, 1.2 s of speech with a 20 ms dip (bridged) and a 200 ms
    // pause (kept inside the turn), then 1 s quiet (the turn ends 600 ms in).
    let turn: Vec<(bool, bool)> = frames(40, false, false)
        .chain(frames(25, true, false))
        .chain(frames(1, false, false))
        .chain(frames(14, true, false))
        .chain(frames(10, false, false))
        .chain(frames(20, true, false))
        .chain(frames(50, false, false))
        .collect();
    // A barge-in: the bot talks for 0.4 s, the caller speaks over it for 0.6 s (the
    // interruption fires at 100 ms), the bot is cleared, then 0.8 s quiet ends the turn.
    let barge: Vec<(bool, bool)> = frames(20, false, true)
        .chain(frames(5, true, true))
        .chain(frames(25, true, false))
        .chain(frames(40, false, false))
        .collect();
    let idle: Vec<(bool, bool)> = frames(50, false, false).collect();

    // Each pattern must do exactly what it is named for, every time round.
    let mut check = Turns::new();
    for _ in 0..3 {
        assert_eq!(check.run(&voice, &silence, &idle), Seen::default());
        assert_eq!(
            check.run(&voice, &silence, &turn),
            Seen {
                barge_ins: 0,
                started: 1,
                ended: 1,
                complete: 1
            }
        );
        assert_eq!(
            check.run(&voice, &silence, &barge),
            Seen {
                barge_ins: 1,
                started: 1,
                ended: 1,
                complete: 1
            }
        );
    }

    let mut group = c.benchmark_group("turn");
    for (name, pattern) in [
        ("idle_silence", &idle),
        ("caller_turn", &turn),
        ("barge_in", &barge),
    ] {
        group.throughput(Throughput::Elements(pattern.len() as u64));
        let mut turns = Turns::new();
        group.bench_function(format!("{name}/per_frame"), |b| {
            b.iter(|| black_box(turns.run(&voice, &silence, black_box(pattern))))
        });
    }

    // Whether a barge-in stands: the transcript of the interruption against the backchannels.
    let backchannels = TurnConfig::default().backchannels;
    group.throughput(Throughput::Elements(1));
    for (name, text, expected) in [
        ("backchannel_yes", "Uh-huh, yeah okay.", true),
        (
            "backchannel_no",
            "No wait, I need to move it to Thursday afternoon instead.",
            false,
        ),
    ] {
        assert_eq!(is_backchannel(text, &backchannels), expected, "{text}");
        group.bench_function(name, |b| {
            b.iter(|| black_box(is_backchannel(black_box(text), &backchannels)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
