//! No CallEvent lost across a restart, proven against the real `voicegw serve` binary on
//! loopback: a graceful SIGTERM with live calls (SQLite and PostgreSQL), a database that is
//! down at start and back at the next start (the spool is replayed once, in order), and a
//! SIGKILL mid-call (what is stored is a gap-free prefix of each call; a torn spool line does
//! not stop the next start).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use voicegw::audio::Encoding;

use common::db::TestDb;
use common::{Ws, connect, http_get, wav};

/// Longest the binary may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(60);
/// The grace period the tests configure (seconds).
const GRACE_SECS: u64 = 3;
/// Longest a SIGTERM'd gateway may take to exit: the grace period, the final close wait and
/// the writer's flush wait, with room to spare on a loaded machine.
const EXIT_LIMIT: Duration = Duration::from_secs(GRACE_SECS + 5 + 10 + 20);

/// One `voicegw serve` process.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts `voicegw serve --agent echo` on `url`, spooling to `spool`, in `dir`, and waits
    /// until it listens.
    async fn start(dir: &Path, url: &str, spool: &Path, run: &str) -> Server {
        let config = dir.join("voicegw.toml");
        std::fs::write(
            &config,
            format!(
                "shutdown_grace_secs = {GRACE_SECS}\n[store]\nspool_path = {:?}\n",
                spool.display().to_string()
            ),
        )
        .unwrap();
        let log = dir.join(format!("{run}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_voicegw"))
            .args(["serve", "--listen", "127.0.0.1:0", "--agent", "echo"])
            .arg("--config")
            .arg(&config)
            .current_dir(dir)
            .env_clear()
            .env("VOICEGW_DATABASE_URL", url)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            if let Some(addr) = listening_on(&server.log_text()) {
                server.addr = addr;
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("voicegw exited at start ({status}):\n{}", server.log_text());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "voicegw did not start listening:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "voicegw still running after {limit:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then a clean exit.
    async fn stop(&mut self) {
        self.terminate();
        let status = self.wait_exit(EXIT_LIMIT).await;
        assert!(status.success(), "{status}:\n{}", self.log_text());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in the `voicegw serving listen=…` log line.
fn listening_on(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("voicegw serving"))?;
    let rest = &line[line.find("listen=")? + "listen=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The carrier side of one Twilio media stream.
struct Call {
    sink: SplitSink<Ws, Message>,
    reader: JoinHandle<Option<u16>>,
    stream_sid: String,
    seq: u64,
    chunk: u64,
    /// DTMF digits sent.
    digits: usize,
}

impl Call {
    /// Connects and sends `connected` and `start`.
    async fn open(server: &Server) -> Call {
        let ws = connect(&server.url("ws", "/stream/twilio")).await;
        let (sink, mut stream) = ws.split();
        // Drain the gateway's messages (echoed audio, marks) so it never waits on us; the
        // close code, if any, is the result.
        let reader = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                match message {
                    Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
            None
        });
        let stream_sid = format!("MZ{}", uuid::Uuid::new_v4().simple());
        let mut call = Call {
            sink,
            reader,
            stream_sid,
            seq: 0,
            chunk: 0,
            digits: 0,
        };
        call.send(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            .await;
        let start = json!({
            "event": "start",
            "sequenceNumber": call.next_seq(),
            "streamSid": call.stream_sid,
            "start": {
                "accountSid": "AC0123456789abcdef0123456789abcdef",
                "streamSid": call.stream_sid,
                "callSid": format!("CA{}", uuid::Uuid::new_v4().simple()),
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {},
            },
        });
        call.send(start).await;
        call
    }

    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    async fn send(&mut self, value: Value) {
        self.sink
            .send(Message::Text(value.to_string().into()))
            .await
            .unwrap();
    }

    /// Sends `pcm` as 20 ms μ-law media messages (as fast as the socket takes them).
    async fn audio(&mut self, pcm: &[i16]) {
        for frame in pcm.chunks(160) {
            let mut payload = Vec::new();
            Encoding::Mulaw.encode_into(frame, &mut payload);
            self.chunk += 1;
            let message = json!({
                "event": "media",
                "sequenceNumber": self.next_seq(),
                "streamSid": self.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": self.chunk.to_string(),
                    "timestamp": (self.chunk * 20).to_string(),
                    "payload": B64.encode(&payload),
                },
            });
            self.send(message).await;
        }
    }

    /// Sends a DTMF event.
    async fn press(&mut self, digit: char) {
        let message = json!({
            "event": "dtmf",
            "sequenceNumber": self.next_seq(),
            "streamSid": self.stream_sid,
            "dtmf": {"track": "inbound_track", "digit": digit.to_string()},
        });
        self.send(message).await;
        self.digits += 1;
    }

    /// Speech, silence and three digits: a call with something to record.
    async fn talk(&mut self) {
        self.audio(&wav("caller_hello.wav")).await;
        self.audio(&[0; 160 * 25]).await;
        for digit in ['1', '2', '3'] {
            self.press(digit).await;
        }
    }

    /// Sends `stop`, as when the caller hangs up.
    async fn hang_up(&mut self) {
        let message = json!({
            "event": "stop",
            "sequenceNumber": self.next_seq(),
            "streamSid": self.stream_sid,
            "stop": {"accountSid": "AC0123456789abcdef0123456789abcdef", "callSid": "CA0"},
        });
        self.send(message).await;
    }

    /// Waits (bounded) for the gateway to close the stream; its close code.
    async fn closed(self, limit: Duration) -> Option<u16> {
        tokio::time::timeout(limit, self.reader)
            .await
            .expect("the gateway did not close the stream")
            .unwrap()
    }
}

/// One stored CallEvent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Stored {
    call_id: String,
    seq: i64,
    kind: String,
}

/// Every stored CallEvent, by call then seq.
async fn stored(url: &str) -> Vec<Stored> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT call_id, seq, type FROM call_events ORDER BY call_id, seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(call_id, seq, kind)| Stored { call_id, seq, kind })
        .collect()
}

/// The stored events grouped by call.
fn by_call(rows: &[Stored]) -> BTreeMap<String, Vec<Stored>> {
    let mut calls: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for row in rows {
        calls
            .entry(row.call_id.clone())
            .or_default()
            .push(row.clone());
    }
    calls
}

/// Checks that `events` (one call's, by seq) are numbered 1, 2, … without a gap or a repeat
/// and open with `stream_started`.
fn assert_gap_free_prefix(events: &[Stored]) {
    assert!(!events.is_empty());
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as i64 + 1, "gap or repeat: {events:#?}");
    }
    assert_eq!(events[0].kind, "stream_started", "{events:#?}");
}

/// Checks one call's events are all there: gap-free, ending with `call_ended`, with every
/// digit sent.
fn assert_complete(events: &[Stored], digits: usize) {
    assert_gap_free_prefix(events);
    assert_eq!(events.last().unwrap().kind, "call_ended", "{events:#?}");
    let ended = events.iter().filter(|e| e.kind == "call_ended").count();
    assert_eq!(ended, 1, "{events:#?}");
    let dtmf = events.iter().filter(|e| e.kind == "dtmf").count();
    assert_eq!(dtmf, digits, "{events:#?}");
}

/// Whether the spool is gone or empty.
fn spool_is_empty(spool: &Path) -> bool {
    std::fs::metadata(spool).map_or(true, |m| m.len() == 0)
}

/// The spool's rows as (call, seq, type).
fn spooled(spool: &Path) -> Vec<Stored> {
    let text = std::fs::read_to_string(spool).unwrap();
    let mut rows: Vec<Stored> = text
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            Stored {
                call_id: row["call_id"].as_str().unwrap().to_owned(),
                seq: row["seq"].as_i64().unwrap(),
                kind: row["type"].as_str().unwrap().to_owned(),
            }
        })
        .collect();
    rows.sort();
    rows
}

/// Polls `done` every 100 ms for up to `limit`; whether it came true.
async fn eventually(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two live calls, SIGTERM: one caller hangs up during the grace period, the other is closed
/// when it ends; the process exits 0 and every event of both calls is stored, in order.
async fn graceful_restart_keeps_every_event(db: TestDb) {
    let spool = db.dir.path().join("events.spool");
    let mut server = Server::start(db.dir.path(), &db.url, &spool, "first").await;
    let mut hangs_up = Call::open(&server).await;
    let mut stays = Call::open(&server).await;
    hangs_up.talk().await;
    stays.talk().await;
    // Both calls are live (their `start` was taken) before the signal.
    let live = eventually(Duration::from_secs(20), async || {
        let (status, body) = http_get(&server.url("http", "/healthz")).await;
        status == 200 && serde_json::from_str::<Value>(&body).unwrap()["live_calls"] == 2
    })
    .await;
    assert!(live, "{}", server.log_text());

    server.terminate();
    hangs_up.press('9').await;
    hangs_up.hang_up().await;
    let digits = (hangs_up.digits, stays.digits);
    hangs_up.closed(EXIT_LIMIT).await;
    let status = server.wait_exit(EXIT_LIMIT).await;
    assert!(status.success(), "{status}:\n{}", server.log_text());
    assert_eq!(stays.closed(EXIT_LIMIT).await, Some(1001));

    let calls = by_call(&stored(&db.url).await);
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let mut dtmf_counts: Vec<usize> = calls
        .values()
        .map(|events| events.iter().filter(|e| e.kind == "dtmf").count())
        .collect();
    dtmf_counts.sort_unstable();
    let mut expected = vec![digits.0, digits.1];
    expected.sort_unstable();
    assert_eq!(dtmf_counts, expected);
    for events in calls.values() {
        let digits = events.iter().filter(|e| e.kind == "dtmf").count();
        assert_complete(events, digits);
    }
    assert!(spool_is_empty(&spool));

    // The next start serves again on the same database.
    let mut server = Server::start(db.dir.path(), &db.url, &spool, "second").await;
    let mut call = Call::open(&server).await;
    call.talk().await;
    call.hang_up().await;
    call.closed(EXIT_LIMIT).await;
    server.stop().await;
    let calls = by_call(&stored(&db.url).await);
    assert_eq!(calls.len(), 3);
    assert!(
        calls
            .values()
            .all(|events| events.last().unwrap().kind == "call_ended")
    );
}

mod graceful_restart {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        graceful_restart_keeps_every_event(TestDb::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        graceful_restart_keeps_every_event(TestDb::postgres().await).await;
    }
}

/// The database refuses at start: the gateway starts anyway, takes calls (their events are
/// spooled) and answers the API with 503; the next start, on the working database, replays
/// the spool once, in order, and removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_then_back_across_a_restart() {
    let db = TestDb::postgres().await;
    let spool = db.dir.path().join("spool/events.spool");
    // The same database on a port nothing listens on.
    let (server_part, name) = db.url.rsplit_once('/').unwrap();
    let (credentials, _) = server_part.rsplit_once('@').unwrap();
    let refused = format!("{credentials}@127.0.0.1:1/{name}");

    let mut server = Server::start(db.dir.path(), &refused, &spool, "down").await;
    assert!(server.log_text().contains("DATABASE UNREACHABLE"));
    let (status, body) = http_get(&server.url("http", "/healthz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["store"],
        "unavailable"
    );
    let (status, body) = http_get(&server.url("http", "/v1/me")).await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    let (status, _) = http_get(&server.url("http", "/no/such/route")).await;
    assert_eq!(status, 404);

    let mut first = Call::open(&server).await;
    let mut second = Call::open(&server).await;
    first.talk().await;
    second.talk().await;
    second.press('#').await;
    let digits = [first.digits, second.digits];
    first.hang_up().await;
    second.hang_up().await;
    first.closed(EXIT_LIMIT).await;
    second.closed(EXIT_LIMIT).await;
    server.stop().await;

    let spooled = spooled(&spool);
    let calls = by_call(&spooled);
    assert_eq!(calls.len(), 2, "{spooled:#?}");
    let mut dtmf: Vec<usize> = calls
        .values()
        .map(|events| {
            let digits = events.iter().filter(|e| e.kind == "dtmf").count();
            assert_complete(events, digits);
            digits
        })
        .collect();
    dtmf.sort_unstable();
    assert_eq!(dtmf, digits.to_vec());
    assert!(stored(&db.url).await.is_empty());

    let mut server = Server::start(db.dir.path(), &db.url, &spool, "back").await;
    let replayed = eventually(Duration::from_secs(30), async || spool_is_empty(&spool)).await;
    assert!(replayed, "{}", server.log_text());
    let (status, body) = http_get(&server.url("http", "/healthz")).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["store"], "ok");
    server.stop().await;

    assert_eq!(stored(&db.url).await, spooled);
    assert!(spool_is_empty(&spool));
}

/// SIGKILL mid-call loses at most the events queued in memory: what is stored is a gap-free
/// prefix of each call, and the next start (even with a torn last spool line) works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_at_most_the_queued_events() {
    let db = TestDb::sqlite().await;
    let spool = db.dir.path().join("events.spool");
    let mut server = Server::start(db.dir.path(), &db.url, &spool, "killed").await;
    let mut calls = vec![Call::open(&server).await, Call::open(&server).await];
    for call in &mut calls {
        call.talk().await;
    }
    // Wait until both calls have events stored, then keep them busy and kill.
    let both_stored = eventually(Duration::from_secs(20), async || {
        by_call(&stored(&db.url).await).len() == 2
    })
    .await;
    assert!(both_stored, "{}", server.log_text());
    for round in 0..20 {
        for call in &mut calls {
            call.press(char::from(b'0' + round % 10)).await;
        }
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let killed = by_call(&stored(&db.url).await);
    assert_eq!(killed.len(), 2);
    let sent: usize = calls.iter().map(|c| c.digits).sum();
    let kept: usize = killed
        .values()
        .map(|events| events.iter().filter(|e| e.kind == "dtmf").count())
        .sum();
    // The rest were still in the sockets, the sessions or the writer's queue.
    eprintln!("after SIGKILL: {kept} of {sent} DTMF events sent were stored");
    for events in killed.values() {
        assert_gap_free_prefix(events);
        assert!(events.iter().all(|e| e.kind != "call_ended"));
    }
    for call in calls {
        // The socket died with the process.
        call.closed(EXIT_LIMIT).await;
    }

    // A crash in the middle of a spool append: one whole row, then a torn one.
    let row = json!({"call_id": "spooled-before-crash", "seq": 1, "at_us": 1, "type": "dtmf",
                     "data": "{\"digit\":\"5\",\"source\":\"carrier\"}"})
    .to_string();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spool)
        .unwrap();
    std::io::Write::write_all(
        &mut file,
        format!("{row}\n{}", &row[..row.len() / 2]).as_bytes(),
    )
    .unwrap();
    drop(file);

    let mut server = Server::start(db.dir.path(), &db.url, &spool, "after-kill").await;
    let replayed = eventually(Duration::from_secs(30), async || spool_is_empty(&spool)).await;
    assert!(replayed, "{}", server.log_text());
    let mut call = Call::open(&server).await;
    call.talk().await;
    call.hang_up().await;
    let digits = call.digits;
    call.closed(EXIT_LIMIT).await;
    server.stop().await;

    let after = by_call(&stored(&db.url).await);
    assert_eq!(after.len(), 4, "{after:#?}");
    for (id, events) in &killed {
        assert_eq!(&after[id], events, "a killed call changed");
    }
    let recovered = &after["spooled-before-crash"];
    assert_eq!(recovered.len(), 1);
    assert_eq!((recovered[0].seq, recovered[0].kind.as_str()), (1, "dtmf"));
    let new: Vec<_> = after
        .iter()
        .filter(|(id, _)| !killed.contains_key(*id) && *id != "spooled-before-crash")
        .collect();
    assert_eq!(new.len(), 1);
    assert_complete(new[0].1, digits);
    assert!(spool_is_empty(&spool));
}
