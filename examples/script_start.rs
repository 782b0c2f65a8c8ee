//! How fast a scripted call speaks: the time from the carrier's `start` message to the first
//! `media` message of the script's first prompt, against a running gateway.
//!
//! Each call connects, sends `connected` and `start`, and waits for the first outbound `media`;
//! then it sends `stop` and closes. `--concurrency` calls run at once (each starts the next call
//! when its own ends) until `--calls` have been measured. The gateway must run a script as its
//! default agent (with no provider keys, `voicegw serve` runs the appointment script with
//! pre-recorded prompts, so this needs nothing configured).
//!
//! ```text
//! cargo build --release --bin voicegw --example script_start
//! target/release/voicegw serve --listen 127.0.0.1:8080 &
//! target/release/examples/script_start --calls 2000 --concurrency 1
//! target/release/examples/script_start --calls 5000 --concurrency 50
//! ```
//! Loopback only; bounded by `--calls`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

/// What to run.
#[derive(Debug, Clone)]
struct Args {
    host: String,
    carrier: Carrier,
    calls: usize,
    concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    Twilio,
    Exotel,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        host: "127.0.0.1:8080".into(),
        carrier: Carrier::Twilio,
        calls: 1000,
        concurrency: 1,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{flag}: not a positive number: {v}"))
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
            "--calls" => args.calls = number(&value)?,
            "--concurrency" => args.concurrency = number(&value)?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

const SID: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

/// The carrier's opening messages for call `index`.
fn opening(carrier: Carrier, index: usize) -> [String; 2] {
    match carrier {
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

fn stop(carrier: Carrier) -> String {
    match carrier {
        Carrier::Twilio => format!(
            r#"{{"event":"stop","sequenceNumber":"2","stop":{{"accountSid":"AC1","callSid":"CA1"}},"streamSid":"{SID}"}}"#
        ),
        Carrier::Exotel => format!(
            r#"{{"event":"stop","sequence_number":"2","stream_sid":"{SID}","stop":{{"call_sid":"c","account_sid":"a","reason":"callended"}}}}"#
        ),
    }
}

/// One call's timings.
#[derive(Debug, Clone, Copy)]
struct Sample {
    connect: Duration,
    first_audio: Duration,
}

/// Runs one call: connect, start, wait for the first media message.
async fn one_call(args: &Args, index: usize) -> Result<Sample, String> {
    let path = match args.carrier {
        Carrier::Twilio => "/stream/twilio",
        Carrier::Exotel => "/stream/exotel",
    };
    let url = format!("ws://{}{path}", args.host);
    let began = Instant::now();
    // A carrier's messages go out at once (no Nagle delay between `connected` and `start`).
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let connect = began.elapsed();
    let [connected, start] = opening(args.carrier, index);
    ws.send(Message::text(connected))
        .await
        .map_err(|e| format!("send: {e}"))?;
    ws.send(Message::text(start))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let sent = Instant::now();
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    let first_audio = loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) if text.contains(r#""event":"media""#) => {
                    break sent.elapsed();
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!("closed before any audio: {frame:?}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("read: {e}")),
                None => return Err("closed before any audio".into()),
            },
            _ = &mut deadline => return Err("no audio within 5 s".into()),
        }
    };
    let _ = ws.send(Message::text(stop(args.carrier))).await;
    let _ = ws.close(None).await;
    Ok(Sample {
        connect,
        first_audio,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn row(name: &str, mut values: Vec<Duration>) -> String {
    values.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{name:<28} p50 {:>7.3} ms  p95 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
        ms(percentile(&values, 50.0)),
        ms(percentile(&values, 95.0)),
        ms(percentile(&values, 99.0)),
        ms(values.last().copied().unwrap_or_default()),
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("script_start: {error}");
            return ExitCode::from(2);
        }
    };
    let args = Arc::new(args);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let samples = Arc::new(Mutex::new(Vec::with_capacity(args.calls)));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let began = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (args, next, samples, failures) = (
                args.clone(),
                next.clone(),
                samples.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if index >= args.calls {
                        break;
                    }
                    match one_call(&args, index).await {
                        Ok(sample) => samples.lock().await.push(sample),
                        Err(error) => failures.lock().await.push(error),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = began.elapsed();
    let samples = samples.lock().await.clone();
    let failures = failures.lock().await.clone();
    println!(
        "{} calls ({} at once, {:?}) in {:.1} s: {} measured, {} failed",
        args.calls,
        args.concurrency,
        args.carrier,
        elapsed.as_secs_f64(),
        samples.len(),
        failures.len()
    );
    println!(
        "{}",
        row(
            "start -> first prompt audio",
            samples.iter().map(|s| s.first_audio).collect()
        )
    );
    println!(
        "{}",
        row(
            "WebSocket connect",
            samples.iter().map(|s| s.connect).collect()
        )
    );
    for failure in failures.iter().take(5) {
        println!("failure: {failure}");
    }
    if failures.is_empty() && !samples.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
