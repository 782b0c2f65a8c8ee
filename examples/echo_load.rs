//! Concurrent echo calls against a running gateway: how many calls one process carries with
//! every frame on time.
//!
//! Plays the Twilio side of `--calls` streams at once (20 ms media clock, playback of the bot's
//! audio in real time, marks echoed when played). Each caller says `caller_yes.wav` and waits
//! 3 s, in a loop. Reports, for the steady phase: response latency (end of the caller's audio →
//! first bot audio; the gateway waits `end_of_turn_silence` = 600 ms by design), the client's
//! own tick lateness (so a saturated client is visible), frames the gateway counted against
//! frames sent, and with `--pid` the gateway's CPU and RSS.
//!
//! ```text
//! cargo build --release --examples
//! target/release/voicegw serve --listen 127.0.0.1:8080 &
//! target/release/examples/echo_load --calls 1000 --duration 60 --ramp 20 --pid $!
//! ```
//! Loopback only; bounded by `--duration`.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use voicegw::audio::Encoding;

#[derive(Debug, Clone)]
struct Args {
    target: String,
    metrics: String,
    calls: usize,
    duration: Duration,
    ramp: Duration,
    pid: Option<u32>,
}

fn parse_args() -> Args {
    let mut args = Args {
        target: "ws://127.0.0.1:8080/stream/twilio".into(),
        metrics: "127.0.0.1:8080".into(),
        calls: 100,
        duration: Duration::from_secs(60),
        ramp: Duration::from_secs(10),
        pid: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() + 1 && i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--target" => args.target = value,
            "--metrics" => args.metrics = value,
            "--calls" => args.calls = value.parse().expect("--calls N"),
            "--duration" => {
                args.duration = Duration::from_secs(value.parse().expect("--duration SECS"))
            }
            "--ramp" => args.ramp = Duration::from_secs(value.parse().expect("--ramp SECS")),
            "--pid" => args.pid = Some(value.parse().expect("--pid PID")),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    args
}

/// Shared counters and samples.
#[derive(Default)]
struct Stats {
    frames_sent: AtomicU64,
    bot_chunks: AtomicU64,
    clears: AtomicU64,
    failed: AtomicU64,
    latencies_ms: Mutex<Vec<u32>>,
    lateness_ms: Mutex<Vec<u32>>,
}

fn load_caller_audio() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audio/caller_yes.wav");
    let mut reader = hound::WavReader::open(path).expect("fixture");
    let pcm: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap_or(0)).collect();
    let mut out = Vec::new();
    Encoding::Mulaw.encode_into(&pcm, &mut out);
    out
}

const SID: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

async fn call(
    index: usize,
    args: Arc<Args>,
    script: Arc<Vec<String>>,
    stats: Arc<Stats>,
    until: Instant,
    measure_from: Instant,
) {
    let Ok((ws, _)) = tokio_tungstenite::connect_async(args.target.as_str()).await else {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let start = format!(
        r#"{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"AC0123456789abcdef0123456789abcdef","streamSid":"{SID}","callSid":"CA{index:032x}","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{}}}},"streamSid":"{SID}"}}"#
    );
    if tx
        .send(Message::Text(
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.into(),
        ))
        .await
        .is_err()
        || tx.send(Message::Text(start.into())).await.is_err()
    {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // Offset each caller in the script so utterances do not all end at once.
    let mut pos = index * 7 % script.len();
    let speech_frames = script
        .iter()
        .position(|f| f.is_empty())
        .unwrap_or(script.len());
    let mut seq = 1u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_due = tokio::time::Instant::now();
    let mut playback: VecDeque<(usize, Option<String>)> = VecDeque::new();
    let mut utterance_end: Option<Instant> = None;
    let mut latencies = Vec::new();
    let mut lateness = Vec::new();
    loop {
        tokio::select! {
            tick = ticker.tick() => {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                if now >= measure_from {
                    lateness.push(tick.elapsed().as_millis() as u32);
                }
                let _ = next_due;
                next_due = tick;
                seq += 1;
                let payload = &script[pos];
                let payload = if payload.is_empty() { &script[script.len() - 1] } else { payload };
                let frame = format!(
                    r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":"{payload}"}},"streamSid":"{SID}"}}"#,
                    seq - 1,
                    (seq - 2) * 20
                );
                if tx.send(Message::Text(frame.into())).await.is_err() {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                pos = (pos + 1) % script.len();
                if pos == speech_frames {
                    utterance_end = Some(now);
                }
                // Play 160 samples of bot audio; echo marks reached.
                let mut budget = 160usize;
                while let Some((samples, mark)) = playback.front_mut() {
                    if *samples > 0 {
                        let take = budget.min(*samples);
                        *samples -= take;
                        budget -= take;
                        if *samples > 0 { break; }
                    }
                    if let Some(name) = mark.take() {
                        seq += 1;
                        let echo = format!(r#"{{"event":"mark","sequenceNumber":"{seq}","streamSid":"{SID}","mark":{{"name":"{name}"}}}}"#);
                        if tx.send(Message::Text(echo.into())).await.is_err() { break; }
                    }
                    playback.pop_front();
                    if budget == 0 && playback.front().is_some_and(|(s, _)| *s > 0) { break; }
                }
            }
            message = rx.next() => {
                let Some(Ok(Message::Text(text))) = message else {
                    if message.is_none() || matches!(message, Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    continue;
                };
                if text.contains(r#""event":"media""#) {
                    stats.bot_chunks.fetch_add(1, Ordering::Relaxed);
                    let b64 = text.split(r#""payload":""#).nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
                    let samples = b64.len() / 4 * 3;
                    playback.push_back((samples, None));
                    if let Some(end) = utterance_end.take()
                        && end >= measure_from
                    {
                        latencies.push(end.elapsed().as_millis() as u32);
                    }
                } else if text.contains(r#""event":"mark""#) {
                    let name = text.split(r#""name":""#).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string();
                    playback.push_back((0, Some(name)));
                } else if text.contains(r#""event":"clear""#) {
                    stats.clears.fetch_add(1, Ordering::Relaxed);
                    playback.clear();
                }
            }
        }
    }
    let _ = tx.send(Message::Text(format!(r#"{{"event":"stop","sequenceNumber":"{}","stop":{{"accountSid":"AC1","callSid":"CA1"}},"streamSid":"{SID}"}}"#, seq + 1).into())).await;
    stats.latencies_ms.lock().await.extend(latencies);
    stats.lateness_ms.lock().await.extend(lateness);
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// (utime + stime in clock ticks, RSS in KiB) of a process.
fn proc_sample(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks, rss))
}

async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut body = Vec::new();
    let _ = stream.read_to_end(&mut body).await;
    String::from_utf8_lossy(&body).into_owned()
}

fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Histogram quantile from cumulative buckets `le → count`.
fn histogram_quantile(text: &str, name: &str, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(le, _)| *le)
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() {
    let args = Arc::new(parse_args());
    let audio = load_caller_audio();
    let b64 = base64::engine::general_purpose::STANDARD;
    // Script: the utterance frames, a marker (empty) where speech ends, 3 s of silence.
    let mut script: Vec<String> = audio
        .chunks(160)
        .filter(|c| c.len() == 160)
        .map(|c| b64.encode(c))
        .collect();
    script.push(String::new());
    let silence = b64.encode([0xFFu8; 160]);
    script.extend(std::iter::repeat_n(silence.clone(), 150));
    let script = Arc::new(script);
    let stats = Arc::new(Stats::default());
    let began = Instant::now();
    let measure_from = began + args.ramp + Duration::from_secs(5);
    let until = began + args.ramp + args.duration;
    let metrics_before = scrape(&args.metrics).await;
    let mut tasks = Vec::new();
    for i in 0..args.calls {
        let delay = args.ramp.mul_f64(i as f64 / args.calls.max(1) as f64);
        let (args, script, stats) = (args.clone(), script.clone(), stats.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            call(i, args, script, stats, until, measure_from).await;
        }));
    }
    // Sample the gateway over the steady phase.
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_start = args.pid.and_then(proc_sample);
    let frames_at_start = stats.frames_sent.load(Ordering::Relaxed);
    let metrics_start = scrape(&args.metrics).await;
    let t0 = Instant::now();
    let mut rss_max = 0;
    while Instant::now() + Duration::from_secs(1) < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some((_, rss)) = args.pid.and_then(proc_sample) {
            rss_max = rss_max.max(rss);
        }
    }
    let cpu_end = args.pid.and_then(proc_sample);
    let steady = t0.elapsed().as_secs_f64();
    let frames_steady = stats.frames_sent.load(Ordering::Relaxed) - frames_at_start;
    let metrics_end = scrape(&args.metrics).await;
    for task in tasks {
        let _ = task.await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics_after = scrape(&args.metrics).await;

    let mut latencies = stats.latencies_ms.lock().await.clone();
    latencies.sort_unstable();
    let mut lateness = stats.lateness_ms.lock().await.clone();
    lateness.sort_unstable();
    let frames_in = metric_sum(&metrics_after, "voicegw_frames_in_total")
        - metric_sum(&metrics_before, "voicegw_frames_in_total");
    let gw_frames_steady = metric_sum(&metrics_end, "voicegw_frames_in_total")
        - metric_sum(&metrics_start, "voicegw_frames_in_total");
    let ticks_per_s = 100.0; // Linux USER_HZ
    let cpu_pct = match (cpu_start, cpu_end) {
        (Some((a, _)), Some((b, _))) => (b - a) as f64 / ticks_per_s / steady * 100.0,
        _ => f64::NAN,
    };
    let p = |q| histogram_quantile(&metrics_after, "voicegw_frame_processing_seconds", q) * 1e6;
    println!("calls                    {}", args.calls);
    println!(
        "failed/dropped calls     {}",
        stats.failed.load(Ordering::Relaxed)
    );
    println!(
        "frames sent / counted    {} / {}",
        stats.frames_sent.load(Ordering::Relaxed),
        frames_in
    );
    println!(
        "steady frames sent/seen  {} / {} ({:.1}/s expected {:.0}/s)",
        frames_steady,
        gw_frames_steady,
        gw_frames_steady / steady,
        args.calls as f64 * 50.0
    );
    println!(
        "bot chunks / clears      {} / {}",
        stats.bot_chunks.load(Ordering::Relaxed),
        stats.clears.load(Ordering::Relaxed)
    );
    println!(
        "response ms p50/p95/p99  {} / {} / {}  (n={}; includes 600 ms end-of-turn silence)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies.len()
    );
    println!(
        "client tick late ms p50/p99/max  {} / {} / {}",
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0)
    );
    println!(
        "gateway frame path µs p50/p99 (bucket upper bounds)  {:.0} / {:.0}",
        p(0.5),
        p(0.99)
    );
    if args.pid.is_some() {
        println!(
            "gateway CPU               {cpu_pct:.1} % of one core ({:.3} % per call)",
            cpu_pct / args.calls as f64
        );
        println!(
            "gateway RSS max           {} MiB ({:.1} KiB per call)",
            rss_max / 1024,
            rss_max as f64 / args.calls as f64
        );
    }
}
