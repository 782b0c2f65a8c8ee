//! Concurrent echo calls against a running gateway: how many calls one process carries with
//! every frame on time.
//!
//! Plays the carrier side of `--calls` streams at once — Twilio (20 ms μ-law messages) or
//! Exotel (100 ms slin16 messages) — with the bot's audio played back in real time and marks
//! echoed when played. Each caller says `caller_yes.wav`, waits for the echo, optionally
//! (`--barge-in`) talks over it one second in with `caller_interrupt.wav`, lets the bot's
//! answer play out and stays silent for 2 s, in a loop. Reports, over the steady phase: response latency (end of the caller's
//! audio → first bot audio; the gateway waits `end_of_turn_silence` = 600 ms by design and the
//! file ends in 200 ms of silence), barge-in reaction (interrupting speech onset → `clear`),
//! the client's own tick lateness (a saturated client shows here), frames the gateway counted
//! against frames sent, chunk-rule violations, and with `--pid` the gateway's CPU and RSS.
//!
//! ```text
//! cargo build --release --bin voicegw --example echo_load
//! target/release/voicegw serve --listen 127.0.0.1:8080 --agent echo &
//! target/release/examples/echo_load --calls 1000 --duration 30 --ramp 15 --pid $!
//! ```
//! Loopback only; bounded by `--ramp` + `--duration`.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use voicegw::audio::Encoding;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    Twilio,
    Exotel,
}

#[derive(Debug, Clone)]
struct Args {
    host: String,
    carrier: Carrier,
    calls: usize,
    duration: Duration,
    ramp: Duration,
    pid: Option<u32>,
    barge_in: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        host: "127.0.0.1:8080".into(),
        carrier: Carrier::Twilio,
        calls: 100,
        duration: Duration::from_secs(60),
        ramp: Duration::from_secs(10),
        pid: None,
        barge_in: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        if flag == "--barge-in" {
            args.barge_in = true;
            continue;
        }
        let value = argv.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--host" => args.host = value,
            "--carrier" => {
                args.carrier = match value.as_str() {
                    "twilio" => Carrier::Twilio,
                    "exotel" => Carrier::Exotel,
                    other => return Err(format!("--carrier: twilio or exotel, not {other}")),
                }
            }
            "--calls" => args.calls = number(&value)? as usize,
            "--duration" => args.duration = Duration::from_secs(number(&value)?),
            "--ramp" => args.ramp = Duration::from_secs(number(&value)?),
            "--pid" => args.pid = Some(number(&value)? as u32),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Shared counters and samples.
#[derive(Default)]
struct Stats {
    frames_sent: AtomicU64,
    bot_chunks: AtomicU64,
    clears: AtomicU64,
    failed: AtomicU64,
    violations: AtomicU64,
    latencies_ms: Mutex<Vec<u32>>,
    barge_ms: Mutex<Vec<u32>>,
    lateness_ms: Mutex<Vec<u32>>,
}

/// Pre-encoded payloads of one carrier message each.
struct Audio {
    utterance: Vec<String>,
    interrupt: Vec<String>,
    silence: String,
    /// Messages of leading silence in `caller_interrupt.wav` before its speech starts.
    interrupt_onset: usize,
}

fn load(name: &str) -> Vec<i16> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/audio")
        .join(name);
    let mut reader = hound::WavReader::open(path).expect("fixture");
    reader.samples::<i16>().map(|s| s.unwrap_or(0)).collect()
}

fn encode(carrier: Carrier, pcm: &[i16], samples_per_message: usize) -> Vec<String> {
    pcm.chunks(samples_per_message)
        .map(|chunk| {
            let mut padded = chunk.to_vec();
            padded.resize(samples_per_message, 0);
            let mut bytes = Vec::new();
            match carrier {
                Carrier::Twilio => Encoding::Mulaw.encode_into(&padded, &mut bytes),
                Carrier::Exotel => Encoding::Linear16.encode_into(&padded, &mut bytes),
            }
            B64.encode(bytes)
        })
        .collect()
}

const SID: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

/// What the simulated caller is doing.
enum Phase {
    /// Saying frame `n` of the utterance.
    Speaking(usize),
    /// Waiting for the echo to start (since when).
    Waiting(Instant),
    /// The echo plays; interrupt at the given time (barge-in runs).
    Listening(Instant),
    /// Saying frame `n` of the interruption.
    Interrupting(usize),
    /// The echo plays to its end (no bot audio for 500 ms), then a pause.
    Draining,
    /// Silent until the given time.
    Pausing(Instant),
}

struct Call {
    carrier: Carrier,
    seq: u64,
    message_ms: u64,
}

impl Call {
    fn media(&mut self, payload: &str) -> String {
        self.seq += 1;
        let (chunk, ts) = (self.seq - 1, (self.seq - 2) * self.message_ms);
        match self.carrier {
            Carrier::Twilio => format!(
                r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{ts}","payload":"{payload}"}},"streamSid":"{SID}"}}"#,
                self.seq
            ),
            Carrier::Exotel => format!(
                r#"{{"event":"media","sequence_number":"{}","stream_sid":"{SID}","media":{{"chunk":"{chunk}","timestamp":"{ts}","payload":"{payload}"}}}}"#,
                self.seq
            ),
        }
    }

    fn mark(&mut self, name: &str) -> String {
        self.seq += 1;
        match self.carrier {
            Carrier::Twilio => format!(
                r#"{{"event":"mark","sequenceNumber":"{}","streamSid":"{SID}","mark":{{"name":"{name}"}}}}"#,
                self.seq
            ),
            Carrier::Exotel => format!(
                r#"{{"event":"mark","sequence_number":"{}","stream_sid":"{SID}","mark":{{"name":"{name}"}}}}"#,
                self.seq
            ),
        }
    }

    fn opening(&mut self, index: usize) -> [String; 2] {
        self.seq = 1;
        match self.carrier {
            Carrier::Twilio => [
                r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_string(),
                format!(
                    r#"{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"AC0123456789abcdef0123456789abcdef","streamSid":"{SID}","callSid":"CA{index:032x}","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{}}}},"streamSid":"{SID}"}}"#
                ),
            ],
            Carrier::Exotel => [
                r#"{"event":"connected"}"#.to_string(),
                format!(
                    r#"{{"event":"start","sequence_number":"1","stream_sid":"{SID}","start":{{"stream_sid":"{SID}","call_sid":"{index:032x}","account_sid":"load","from":"+919876543210","to":"+918047491899","custom_parameters":{{}},"media_format":{{"encoding":"audio/x-raw","sample_rate":"8000","bit_rate":"16"}}}}}}"#
                ),
            ],
        }
    }

    fn stop(&mut self) -> String {
        self.seq += 1;
        match self.carrier {
            Carrier::Twilio => format!(
                r#"{{"event":"stop","sequenceNumber":"{}","stop":{{"accountSid":"AC1","callSid":"CA1"}},"streamSid":"{SID}"}}"#,
                self.seq
            ),
            Carrier::Exotel => format!(
                r#"{{"event":"stop","sequence_number":"{}","stream_sid":"{SID}","stop":{{"call_sid":"c","account_sid":"a","reason":"callended"}}}}"#,
                self.seq
            ),
        }
    }
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.split(key)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
}

#[allow(clippy::too_many_lines)]
async fn call(
    index: usize,
    args: Arc<Args>,
    audio: Arc<Audio>,
    stats: Arc<Stats>,
    until: Instant,
    measure_from: Instant,
) {
    let path = match args.carrier {
        Carrier::Twilio => "twilio",
        Carrier::Exotel => "exotel",
    };
    let url = format!("ws://{}/stream/{path}", args.host);
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let message_ms = match args.carrier {
        Carrier::Twilio => 20,
        Carrier::Exotel => 100,
    };
    let samples_per_message = message_ms as usize * 8;
    let mut call = Call {
        carrier: args.carrier,
        seq: 0,
        message_ms,
    };
    for opening in call.opening(index) {
        if tx.send(Message::Text(opening.into())).await.is_err() {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    // Spread callers over the first few seconds so their turns do not all end together.
    let mut phase =
        Phase::Pausing(Instant::now() + Duration::from_millis((index as u64 * 37) % 3000));
    let mut ticker = tokio::time::interval(Duration::from_millis(message_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut playback: VecDeque<(usize, Option<String>)> = VecDeque::new();
    let mut utterance_end: Option<Instant> = None;
    let mut interrupt_onset: Option<Instant> = None;
    let mut last_bot_audio = Instant::now();
    let (mut latencies, mut barges, mut lateness) = (Vec::new(), Vec::new(), Vec::new());
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
                let payload = match &mut phase {
                    Phase::Speaking(n) => {
                        let payload = &audio.utterance[*n];
                        *n += 1;
                        if *n == audio.utterance.len() {
                            utterance_end = Some(now);
                            phase = Phase::Waiting(now);
                        }
                        payload
                    }
                    Phase::Interrupting(n) => {
                        let payload = &audio.interrupt[*n];
                        if *n == audio.interrupt_onset {
                            interrupt_onset = Some(now);
                        }
                        *n += 1;
                        if *n == audio.interrupt.len() {
                            utterance_end = Some(now);
                            phase = Phase::Waiting(now);
                        }
                        payload
                    }
                    Phase::Waiting(since) => {
                        if now.duration_since(*since) > Duration::from_secs(5) {
                            phase = Phase::Pausing(now);
                        }
                        &audio.silence
                    }
                    Phase::Listening(at) => {
                        if now >= *at {
                            phase = Phase::Interrupting(0);
                        }
                        &audio.silence
                    }
                    Phase::Draining => {
                        if playback.is_empty() && now.duration_since(last_bot_audio) > Duration::from_millis(500) {
                            phase = Phase::Pausing(now + Duration::from_secs(2));
                        }
                        &audio.silence
                    }
                    Phase::Pausing(until_then) => {
                        if now >= *until_then {
                            phase = Phase::Speaking(0);
                        }
                        &audio.silence
                    }
                };
                let frame = call.media(payload);
                if tx.send(Message::Text(frame.into())).await.is_err() {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                // Play one message's worth of bot audio; echo the marks reached.
                let mut budget = samples_per_message;
                let mut marks = Vec::new();
                while let Some((samples, mark)) = playback.front_mut() {
                    let take = budget.min(*samples);
                    *samples -= take;
                    budget -= take;
                    if *samples > 0 {
                        break;
                    }
                    if let Some(name) = mark.take() {
                        marks.push(name);
                    }
                    playback.pop_front();
                    if budget == 0 && playback.front().is_some_and(|(s, _)| *s > 0) {
                        break;
                    }
                }
                for name in marks {
                    let echo = call.mark(&name);
                    if tx.send(Message::Text(echo.into())).await.is_err() {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            message = rx.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    _ => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                let now = Instant::now();
                if text.contains(r#""event":"media""#) {
                    stats.bot_chunks.fetch_add(1, Ordering::Relaxed);
                    let payload = field(&text, r#""payload":""#);
                    let bytes = B64.decode(payload).unwrap_or_default();
                    let samples = match args.carrier {
                        Carrier::Twilio => bytes.len(),
                        Carrier::Exotel => {
                            if !bytes.len().is_multiple_of(320) || bytes.len() < 3200 || bytes.len() > 100_000 {
                                stats.violations.fetch_add(1, Ordering::Relaxed);
                            }
                            bytes.len() / 2
                        }
                    };
                    playback.push_back((samples, None));
                    last_bot_audio = now;
                    if let Some(end) = utterance_end.take() {
                        if end >= measure_from {
                            latencies.push(now.duration_since(end).as_millis() as u32);
                        }
                        phase = if args.barge_in && interrupt_onset.is_none() {
                            Phase::Listening(now + Duration::from_secs(1))
                        } else {
                            interrupt_onset = None;
                            Phase::Draining
                        };
                    }
                } else if text.contains(r#""event":"mark""#) {
                    playback.push_back((0, Some(field(&text, r#""name":""#).to_string())));
                } else if text.contains(r#""event":"clear""#) {
                    stats.clears.fetch_add(1, Ordering::Relaxed);
                    if let Some(onset) = interrupt_onset
                        && onset >= measure_from
                    {
                        barges.push(now.duration_since(onset).as_millis() as u32);
                    }
                    // Unplayed audio is dropped; pending marks come back at once.
                    let pending: Vec<String> = playback.drain(..).filter_map(|(_, m)| m).collect();
                    for name in pending {
                        let echo = call.mark(&name);
                        let _ = tx.send(Message::Text(echo.into())).await;
                    }
                } else {
                    stats.violations.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    let _ = tx.send(Message::Text(call.stop().into())).await;
    stats.latencies_ms.lock().await.extend(latencies);
    stats.barge_ms.lock().await.extend(barges);
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
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
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

async fn scrape(host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(host).await else {
        return String::new();
    };
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
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

/// Upper bound of the histogram bucket holding quantile `q` (cumulative `le` buckets).
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
    let args = match parse_args() {
        Ok(args) => Arc::new(args),
        Err(error) => {
            eprintln!(
                "echo_load: {error}\nusage: echo_load [--host H:P] [--carrier twilio|exotel] [--calls N] [--duration S] [--ramp S] [--pid PID] [--barge-in]"
            );
            std::process::exit(2);
        }
    };
    let per_message = match args.carrier {
        Carrier::Twilio => 160,
        Carrier::Exotel => 800,
    };
    let interrupt = load("caller_interrupt.wav");
    let onset = interrupt
        .iter()
        .position(|s| s.unsigned_abs() > 300)
        .unwrap_or(0);
    let audio = Arc::new(Audio {
        utterance: encode(args.carrier, &load("caller_yes.wav"), per_message),
        interrupt: encode(args.carrier, &interrupt, per_message),
        silence: encode(args.carrier, &vec![0; per_message], per_message).remove(0),
        interrupt_onset: onset / per_message,
    });
    let stats = Arc::new(Stats::default());
    let began = Instant::now();
    let measure_from = began + args.ramp + Duration::from_secs(5);
    let until = began + args.ramp + args.duration;
    let metrics_before = scrape(&args.host).await;
    let mut tasks = Vec::new();
    for i in 0..args.calls {
        let delay = args.ramp.mul_f64(i as f64 / args.calls.max(1) as f64);
        let (args, audio, stats) = (args.clone(), audio.clone(), stats.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            call(i, args, audio, stats, until, measure_from).await;
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_start = args.pid.and_then(proc_sample);
    let metrics_start = scrape(&args.host).await;
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
    let metrics_end = scrape(&args.host).await;
    for task in tasks {
        let _ = task.await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics_after = scrape(&args.host).await;

    let sorted = |v: Vec<u32>| {
        let mut v = v;
        v.sort_unstable();
        v
    };
    let latencies = sorted(stats.latencies_ms.lock().await.clone());
    let barges = sorted(stats.barge_ms.lock().await.clone());
    let lateness = sorted(stats.lateness_ms.lock().await.clone());
    let frames_in = metric_sum(&metrics_after, "voicegw_frames_in_total")
        - metric_sum(&metrics_before, "voicegw_frames_in_total");
    let steady_in = metric_sum(&metrics_end, "voicegw_frames_in_total")
        - metric_sum(&metrics_start, "voicegw_frames_in_total");
    let cpu_pct = match (cpu_start, cpu_end) {
        (Some((a, _)), Some((b, _))) => (b - a) as f64 / 100.0 / steady * 100.0, // USER_HZ = 100
        _ => f64::NAN,
    };
    let frame_us =
        |q| histogram_quantile(&metrics_after, "voicegw_frame_processing_seconds", q) * 1e6;
    let per_second = 1000.0
        / match args.carrier {
            Carrier::Twilio => 20.0,
            Carrier::Exotel => 100.0,
        };
    println!(
        "carrier / calls            {:?} / {}",
        args.carrier, args.calls
    );
    println!(
        "failed or dropped calls    {}",
        stats.failed.load(Ordering::Relaxed)
    );
    println!(
        "protocol violations        {}",
        stats.violations.load(Ordering::Relaxed)
    );
    println!(
        "frames sent / counted      {} / {}",
        stats.frames_sent.load(Ordering::Relaxed),
        frames_in
    );
    println!(
        "steady frame rate          {:.0}/s (expected {:.0}/s)",
        steady_in / steady,
        args.calls as f64 * per_second
    );
    println!(
        "bot chunks / clears        {} / {}",
        stats.bot_chunks.load(Ordering::Relaxed),
        stats.clears.load(Ordering::Relaxed)
    );
    println!(
        "response ms p50/p95/p99    {} / {} / {}  (n={})",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies.len()
    );
    if args.barge_in {
        println!(
            "barge-in → clear ms p50/p95/p99  {} / {} / {}  (n={})",
            percentile(&barges, 0.5),
            percentile(&barges, 0.95),
            percentile(&barges, 0.99),
            barges.len()
        );
    }
    println!(
        "client tick late ms p50/p99/max  {} / {} / {}",
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0)
    );
    println!(
        "gateway frame path µs p50/p99 (bucket bounds)  {:.0} / {:.0}",
        frame_us(0.5),
        frame_us(0.99)
    );
    if args.pid.is_some() {
        println!(
            "gateway CPU                {cpu_pct:.1} % of one core ({:.3} % per call)",
            cpu_pct / args.calls.max(1) as f64
        );
        println!(
            "gateway RSS max            {} MiB ({:.0} KiB per call)",
            rss_max / 1024,
            rss_max as f64 / args.calls.max(1) as f64
        );
    }
}
