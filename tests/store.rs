//! The store on SQLite and PostgreSQL: every test body runs on both backends. Each PostgreSQL
//! test gets its own database (`voicegw_t_<uuid>`), dropped at the end.

use std::time::Duration;

use sqlx::Connection;
use tempfile::TempDir;
use voicegw::call::CallId;
use voicegw::call::agent::DtmfSource;
use voicegw::call::events::{CallEventKind, CallRecorder};
use voicegw::store::calls::{CallStatus, Direction, EventRow, NewCall};
use voicegw::store::events::{WriterConfig, spawn_event_writer};
use voicegw::store::hub::EventHub;
use voicegw::store::tenants::{Plan, Role};
use voicegw::store::{OpenOptions, Scope, Store, StoreError};

/// The server the PostgreSQL tests use (a database there to connect to first).
fn pg_admin_url() -> String {
    std::env::var("VOICEGW_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh, migrated store and what it needs to live.
struct TestDb {
    store: Store,
    url: String,
    dir: TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/dir/voicegw.db", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        TestDb {
            store,
            url,
            dir,
            pg_name: None,
        }
    }

    async fn postgres() -> TestDb {
        let admin = pg_admin_url();
        let name = format!("voicegw_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("bad VOICEGW_TEST_PG_URL {admin}"),
        };
        let store = Store::open(&url).await.unwrap();
        TestDb {
            store,
            url,
            dir: tempfile::tempdir().unwrap(),
            pg_name: Some(name),
        }
    }

    fn spool(&self) -> std::path::PathBuf {
        self.dir.path().join("spool/events.jsonl")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = pg_admin_url();
            // Drop runs outside any async context's reach: a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Runs one body as two tests, `<name>::sqlite` and `<name>::postgres`.
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(super::TestDb::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(super::TestDb::postgres().await).await;
            }
        }
    };
}

fn outbound() -> NewCall {
    NewCall {
        direction: Direction::Outbound,
        from: "+14155550100".into(),
        to: "+14155550111".into(),
        carrier: "twilio".into(),
        carrier_sid: None,
    }
}

fn row(call: CallId, seq: i64) -> EventRow {
    EventRow {
        call_id: call.to_string(),
        seq,
        at_us: 1_700_000_000_000_000 + seq,
        kind: "dtmf".into(),
        data: format!(r#"{{"digit":"{}","source":"carrier"}}"#, seq % 10),
    }
}

both!(migrations_are_idempotent, migrations_body);
async fn migrations_body(db: TestDb) {
    // A second open finds the schema in place.
    let again = Store::open(&db.url).await.unwrap();
    assert!(again.list_tenants(Scope::Super).await.unwrap().is_empty());
    again.create_tenant("acme", Plan::Full).await.unwrap();
    assert_eq!(db.store.list_tenants(Scope::Super).await.unwrap().len(), 1);
    again.close().await;
    if db.pg_name.is_none() {
        assert!(db.dir.path().join("nested/dir/voicegw.db").exists());
        // WAL leaves its side file next to the database.
        assert!(db.dir.path().join("nested/dir/voicegw.db-wal").exists());
    }
}

both!(tenants_cannot_read_each_other, scoping_body);
async fn scoping_body(db: TestDb) {
    let s = &db.store;
    let a = s.create_tenant("a", Plan::Outbound).await.unwrap();
    let b = s.create_tenant("b", Plan::Inbound).await.unwrap();
    let (sa, sb) = (Scope::Tenant(a.id), Scope::Tenant(b.id));
    let call_a = s.create_call(a.id, &outbound()).await.unwrap();
    let call_b = s.create_call(b.id, &outbound()).await.unwrap();
    s.append_events(&[row(call_a.id, 1), row(call_b.id, 1)])
        .await
        .unwrap();

    assert_eq!(
        s.get_call(sa, call_a.id).await.unwrap(),
        Some(call_a.clone())
    );
    assert_eq!(s.get_call(sa, call_b.id).await.unwrap(), None);
    assert_eq!(
        s.get_call(Scope::Super, call_b.id).await.unwrap(),
        Some(call_b.clone())
    );
    let listed: Vec<_> = s.list_calls(sb, None, 100).await.unwrap();
    assert_eq!(listed, vec![call_b.clone()]);
    assert_eq!(
        s.list_calls(Scope::Super, None, 100).await.unwrap().len(),
        2
    );
    assert!(
        s.call_events(sa, call_b.id, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.call_events(sb, call_b.id, 0, 100).await.unwrap().len(), 1);
    assert_eq!(
        s.call_events(Scope::Super, call_a.id, 0, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        s.set_call_status(sa, call_b.id, CallStatus::Ringing).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.set_call_details(sa, call_b.id, Some("CA1"), None, None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.list_tenants(sa).await.unwrap(), vec![a]);
    // Paging: after the first call, the second.
    let all = s.list_calls(Scope::Super, None, 1).await.unwrap();
    assert_eq!(all.len(), 1);
    let next = s
        .list_calls(Scope::Super, Some(all[0].id), 10)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].id, all[0].id);
}

both!(api_keys_are_stored_hashed, keys_body);
async fn keys_body(db: TestDb) {
    let s = &db.store;
    let t = s.create_tenant("t", Plan::Full).await.unwrap();
    let (key, secret) = s
        .create_api_key(Some(t.id), Role::Admin, "ops")
        .await
        .unwrap();
    assert!(secret.starts_with(&key.prefix));
    assert_eq!(key.scope(), Some(Scope::Tenant(t.id)));
    assert_eq!(s.find_api_key(&secret).await.unwrap(), Some(key.clone()));
    assert_eq!(s.find_api_key(&format!("{secret}x")).await.unwrap(), None);
    assert_eq!(s.find_api_key(&key.prefix).await.unwrap(), None);
    let (root, root_secret) = s
        .create_api_key(None, Role::Superadmin, "root")
        .await
        .unwrap();
    assert_eq!(root.scope(), Some(Scope::Super));
    assert_eq!(
        s.find_api_key(&root_secret).await.unwrap(),
        Some(root.clone())
    );
    assert!(matches!(
        s.create_api_key(Some(t.id), Role::Superadmin, "x").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.create_api_key(None, Role::Agent, "x").await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        s.list_api_keys(Scope::Tenant(t.id)).await.unwrap(),
        vec![key.clone()]
    );
    assert_eq!(s.list_api_keys(Scope::Super).await.unwrap().len(), 2);
    // The secret itself is nowhere in the table.
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let found: Vec<(String, String)> = sqlx::query_as("SELECT prefix, key_hash FROM api_keys")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(
        found
            .iter()
            .all(|(p, h)| !secret.contains(h.as_str()) && secret != *p && h.len() == 64)
    );
    // Another tenant cannot revoke it; its own scope can.
    let other = s.create_tenant("o", Plan::Full).await.unwrap();
    assert!(matches!(
        s.revoke_api_key(Scope::Tenant(other.id), key.id).await,
        Err(StoreError::NotFound(_))
    ));
    s.revoke_api_key(Scope::Tenant(t.id), key.id).await.unwrap();
    assert_eq!(s.find_api_key(&secret).await.unwrap(), None);
    s.create_user(Some(t.id), "a@example.com", Role::Agent)
        .await
        .unwrap();
    assert!(matches!(
        s.create_user(Some(t.id), "a@example.com", Role::Admin)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.create_user(None, "b@example.com", Role::Admin).await,
        Err(StoreError::Invalid(_))
    ));
}

both!(events_are_append_only_and_ordered, events_body);
async fn events_body(db: TestDb) {
    let s = &db.store;
    let call = CallId::new();
    assert_eq!(
        s.append_events(&[row(call, 3), row(call, 1)])
            .await
            .unwrap(),
        2
    );
    // A replayed row keeps the first version.
    let mut changed = row(call, 1);
    changed.data = r#"{"digit":"9"}"#.into();
    assert_eq!(s.append_events(&[changed, row(call, 2)]).await.unwrap(), 1);
    let got = s.call_events(Scope::Super, call, 0, 100).await.unwrap();
    assert_eq!(got, vec![row(call, 1), row(call, 2), row(call, 3)]);
    assert_eq!(
        s.call_events(Scope::Super, call, 1, 1).await.unwrap(),
        vec![row(call, 2)]
    );
    assert_eq!(s.append_events(&[]).await.unwrap(), 0);
}

both!(call_status_follows_the_lifecycle, lifecycle_body);
async fn lifecycle_body(db: TestDb) {
    let s = &db.store;
    let t = s.create_tenant("t", Plan::Full).await.unwrap();
    let scope = Scope::Tenant(t.id);
    let call = s.create_call(t.id, &outbound()).await.unwrap();
    assert_eq!(call.status, CallStatus::Queued);
    s.set_call_status(scope, call.id, CallStatus::Ringing)
        .await
        .unwrap();
    let live = s
        .set_call_status(scope, call.id, CallStatus::InProgress)
        .await
        .unwrap();
    assert!(live.answered_us.is_some() && live.ended_us.is_none());
    s.set_call_details(scope, call.id, Some("CA123"), Some("booked"), None)
        .await
        .unwrap();
    let done = s
        .set_call_status(scope, call.id, CallStatus::Completed)
        .await
        .unwrap();
    assert_eq!(done.status, CallStatus::Completed);
    assert!(done.ended_us.is_some());
    assert_eq!(done.carrier_sid.as_deref(), Some("CA123"));
    assert_eq!(done.outcome.as_deref(), Some("booked"));
    // A replayed callback is harmless; going back is refused.
    s.set_call_status(scope, call.id, CallStatus::Completed)
        .await
        .unwrap();
    assert!(matches!(
        s.set_call_status(scope, call.id, CallStatus::Ringing).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.set_call_status(scope, call.id, CallStatus::Queued).await,
        Err(StoreError::Invalid(_))
    ));
}

both!(numbers_scripts_contacts, catalog_body);
async fn catalog_body(db: TestDb) {
    let s = &db.store;
    let a = s.create_tenant("a", Plan::Full).await.unwrap();
    let b = s.create_tenant("b", Plan::Full).await.unwrap();
    let n = s
        .add_phone_number(a.id, "+1 (415) 555-0100", "twilio")
        .await
        .unwrap();
    assert_eq!(n.e164, "+14155550100");
    assert!(matches!(
        s.add_phone_number(b.id, "+14155550100", "twilio").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.add_phone_number(b.id, "555", "twilio").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.add_phone_number(b.id, "+14155550199", "pigeon").await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        s.find_phone_number(Scope::Super, "+14155550100")
            .await
            .unwrap(),
        Some(n.clone())
    );
    assert_eq!(
        s.find_phone_number(Scope::Tenant(b.id), "+14155550100")
            .await
            .unwrap(),
        None
    );
    let v1 = s.add_script_version(a.id, "main", "a").await.unwrap();
    let v2 = s.add_script_version(a.id, "main", "b").await.unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    assert_ne!(v1.hash, v2.hash);
    assert_eq!(
        s.latest_script(Scope::Tenant(a.id), "main").await.unwrap(),
        Some(v2)
    );
    assert_eq!(
        s.latest_script(Scope::Tenant(b.id), "main").await.unwrap(),
        None
    );
    let mut vars = serde_json::Map::new();
    vars.insert("name".into(), serde_json::json!("Ada"));
    let c = s.add_contact(a.id, "+14155550123", vars).await.unwrap();
    assert_eq!(
        s.find_contact(Scope::Tenant(a.id), "+14155550123")
            .await
            .unwrap(),
        Some(c)
    );
    assert_eq!(
        s.find_contact(Scope::Tenant(b.id), "+14155550123")
            .await
            .unwrap(),
        None
    );
}

fn config(db: &TestDb, max_batch: usize) -> WriterConfig {
    WriterConfig {
        capacity: 100_000,
        max_batch,
        max_delay: Duration::from_millis(20),
        retry_every: Duration::from_millis(100),
        spool_path: db.spool(),
    }
}

fn record_keys(recorder: &mut CallRecorder, n: usize) {
    for i in 0..n {
        recorder.record(CallEventKind::Dtmf {
            digit: char::from(b'0' + (i % 10) as u8),
            source: DtmfSource::Carrier,
        });
    }
}

fn assert_complete(rows: &[EventRow], n: i64) {
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
}

both!(writer_batches_events, writer_body);
async fn writer_body(db: TestDb) {
    let (sink, handle) = spawn_event_writer(
        db.store.clone(),
        config(&db, 100),
        None,
        EventHub::default(),
    );
    let calls: Vec<CallId> = (0..3).map(|_| CallId::new()).collect();
    for call in &calls {
        let mut recorder = CallRecorder::new(*call, sink.clone());
        record_keys(&mut recorder, 400);
        recorder.record(CallEventKind::CallEnded {
            reason: "hangup".into(),
            duration_ms: 1000,
        });
    }
    drop(sink);
    let stats = handle.await.unwrap();
    assert_eq!(stats.stored, 1203);
    assert_eq!(stats.spooled, 0);
    assert!(stats.batches >= 13, "{stats:?}");
    for call in &calls {
        let rows = db
            .store
            .call_events(Scope::Super, *call, 0, 10_000)
            .await
            .unwrap();
        assert_complete(&rows, 401);
        assert_eq!(rows[0].kind, "dtmf");
        assert_eq!(rows[0].data, r#"{"digit":"0","source":"carrier"}"#);
        assert_eq!(rows[400].kind, "call_ended");
    }
    assert!(!db.spool().exists());
}

both!(spooled_events_replay_after_restart, restart_body);
async fn restart_body(db: TestDb) {
    // First run: the database is unreachable (nothing listens on port 9).
    let down = Store::open_with(
        "postgres://postgres@127.0.0.1:9/none",
        &OpenOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_millis(300),
            migrate: false,
        },
    )
    .await
    .unwrap();
    let (sink, handle) = spawn_event_writer(down, config(&db, 100), None, EventHub::default());
    let call = CallId::new();
    let mut recorder = CallRecorder::new(call, sink);
    record_keys(&mut recorder, 500);
    drop(recorder);
    let stats = handle.await.unwrap();
    assert_eq!((stats.stored, stats.spooled, stats.lost), (0, 500, 0));
    assert!(stats.left_in_spool);
    // Some of them reached the database before the outage: the replay must not repeat them.
    let early: Vec<EventRow> = db
        .store
        .call_events(Scope::Super, call, 0, 1)
        .await
        .unwrap();
    assert!(early.is_empty());
    let spooled = voicegw::store::spool::Spool::new(db.spool())
        .read()
        .await
        .unwrap();
    assert_eq!(spooled.len(), 500);
    db.store.append_events(&spooled[..100]).await.unwrap();

    // Restart on the reachable database: the spool is replayed first, then new events follow.
    let (sink, handle) = spawn_event_writer(
        db.store.clone(),
        config(&db, 100),
        None,
        EventHub::default(),
    );
    let mut later = CallRecorder::new(CallId::new(), sink);
    record_keys(&mut later, 50);
    drop(later);
    let stats = handle.await.unwrap();
    assert_eq!(
        (stats.replayed, stats.stored, stats.spooled),
        (500, 50, 0),
        "{stats:?}"
    );
    assert!(!stats.left_in_spool);
    let rows = db
        .store
        .call_events(Scope::Super, call, 0, 10_000)
        .await
        .unwrap();
    assert_complete(&rows, 500);
    assert_eq!(rows, spooled);
    assert!(!db.spool().exists());
}

/// A PostgreSQL database that refuses connections for a while in the middle of a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_mid_run_spools_then_replays_in_order() {
    let db = TestDb::postgres().await;
    let name = db.pg_name.clone().unwrap();
    let store = Store::open_with(
        &db.url,
        &OpenOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_millis(500),
            migrate: false,
        },
    )
    .await
    .unwrap();
    let (sink, handle) = spawn_event_writer(store, config(&db, 50), None, EventHub::default());
    let call = CallId::new();
    let mut recorder = CallRecorder::new(call, sink);
    record_keys(&mut recorder, 100);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
    let admin_sql = |sql: String| sqlx::query(sqlx::AssertSqlSafe(sql));
    admin_sql(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin_sql(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    record_keys(&mut recorder, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(db.spool().exists(), "the outage should have spooled events");
    admin_sql(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    record_keys(&mut recorder, 100);
    drop(recorder);
    let stats = handle.await.unwrap();
    assert!(
        stats.spooled > 0 && stats.replayed >= stats.spooled,
        "{stats:?}"
    );
    assert_eq!(stats.lost, 0);
    assert!(!stats.left_in_spool);
    let rows = db
        .store
        .call_events(Scope::Super, call, 0, 10_000)
        .await
        .unwrap();
    assert_complete(&rows, 400);
}

fn stream_started() -> CallEventKind {
    CallEventKind::StreamStarted {
        carrier: "twilio",
        stream_sid: "MZ1".into(),
        call_sid: "CA1".into(),
        encoding: "audio/x-mulaw",
        sample_rate: 8000,
        agent: "echo".into(),
    }
}

fn call_ended(reason: &str) -> CallEventKind {
    CallEventKind::CallEnded {
        reason: reason.into(),
        duration_ms: 1500,
    }
}

both!(call_status_follows_the_event_stream, stream_status_body);
async fn stream_status_body(db: TestDb) {
    let s = &db.store;
    let tenant = s.create_tenant("acme", Plan::Full).await.unwrap();
    let answered = s.create_call(tenant.id, &outbound()).await.unwrap();
    let canceled = s.create_call(tenant.id, &outbound()).await.unwrap();
    s.set_call_status(Scope::Super, canceled.id, CallStatus::Canceled)
        .await
        .unwrap();
    let booked = s.create_call(tenant.id, &outbound()).await.unwrap();
    s.set_call_details(Scope::Super, booked.id, None, Some("booked"), None)
        .await
        .unwrap();
    let stranger = CallId::new();

    let (sink, handle) = spawn_event_writer(s.clone(), config(&db, 100), None, EventHub::default());
    for call in [answered.id, canceled.id, booked.id, stranger] {
        let mut recorder = CallRecorder::new(call, sink.clone());
        recorder.record(stream_started());
        record_keys(&mut recorder, 3);
        recorder.record(call_ended("carrier_stop"));
    }
    drop(sink);
    let stats = handle.await.unwrap();
    assert_eq!(stats.stored, 20);
    assert_eq!(
        (stats.status_updates, stats.unknown_calls),
        (6, 2),
        "{stats:?}"
    );

    let get = |id| async move { s.get_call(Scope::Super, id).await.unwrap().unwrap() };
    let events = |id| async move { s.call_events(Scope::Super, id, 0, 100).await.unwrap() };
    let a = get(answered.id).await;
    let a_events = events(answered.id).await;
    assert_eq!(a.status, CallStatus::Completed);
    assert_eq!(a.outcome.as_deref(), Some("carrier_stop"));
    assert_eq!(a.answered_us, Some(a_events[0].at_us));
    assert_eq!(a.ended_us, Some(a_events[4].at_us));
    assert!(a.updated_us >= a.created_us);

    // Already final: the status stays, the empty outcome is filled, no answer time appears.
    let c = get(canceled.id).await;
    assert_eq!(c.status, CallStatus::Canceled);
    assert_eq!(c.outcome.as_deref(), Some("carrier_stop"));
    assert_eq!(c.answered_us, None);
    let canceled_end = c.ended_us;
    assert!(canceled_end.is_some());

    // An outcome set by the control plane is kept.
    let b = get(booked.id).await;
    assert_eq!(b.status, CallStatus::Completed);
    assert_eq!(b.outcome.as_deref(), Some("booked"));

    // The stream nobody created left no call behind, only its events.
    assert!(s.get_call(Scope::Super, stranger).await.unwrap().is_none());
    assert_eq!(events(stranger).await.len(), 5);

    // Applying the same events again (a spool replay) changes nothing.
    let before = vec![
        get(answered.id).await,
        get(canceled.id).await,
        get(booked.id).await,
    ];
    let mut all = Vec::new();
    for id in [answered.id, canceled.id, booked.id, stranger] {
        all.extend(events(id).await);
    }
    let again = s.apply_lifecycle(&all).await.unwrap();
    assert_eq!((again.applied, again.unknown_calls), (6, 2));
    let after = vec![
        get(answered.id).await,
        get(canceled.id).await,
        get(booked.id).await,
    ];
    assert_eq!(before, after);
}

both!(
    a_call_answered_twice_keeps_its_first_answer_time,
    answered_twice_body
);
async fn answered_twice_body(db: TestDb) {
    let s = &db.store;
    let tenant = s.create_tenant("acme", Plan::Full).await.unwrap();
    let call = s.create_call(tenant.id, &outbound()).await.unwrap();
    s.set_call_status(Scope::Super, call.id, CallStatus::Ringing)
        .await
        .unwrap();
    let started = |seq: i64, at_us: i64| EventRow {
        call_id: call.id.to_string(),
        seq,
        at_us,
        kind: "stream_started".into(),
        data: "{}".into(),
    };
    s.append_events(&[started(1, 1_000), started(2, 2_000)])
        .await
        .unwrap();
    let applied = s
        .apply_lifecycle(&[started(1, 1_000), started(2, 2_000)])
        .await
        .unwrap();
    assert_eq!(applied.applied, 2);
    let now = s.get_call(Scope::Super, call.id).await.unwrap().unwrap();
    assert_eq!(now.status, CallStatus::InProgress);
    assert_eq!(now.answered_us, Some(1_000));
    assert_eq!(now.ended_us, None);
}

both!(live_viewers_get_events_before_the_database, hub_body);
async fn hub_body(db: TestDb) {
    let hub = EventHub::new(1024);
    let call = CallId::new();
    let mut watcher = hub.subscribe(&call.to_string());
    let mut other = hub.subscribe(&CallId::new().to_string());
    let (sink, handle) = spawn_event_writer(db.store.clone(), config(&db, 100), None, hub.clone());
    let mut recorder = CallRecorder::new(call, sink);
    record_keys(&mut recorder, 250);
    recorder.record(call_ended("hangup"));
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), watcher.recv()).await {
            Ok(Ok(row)) => seen.push(row.seq),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, (1..=251).collect::<Vec<i64>>());
    assert!(
        other.try_recv().is_err(),
        "another call's viewer saw nothing"
    );
    drop(recorder);
    let stats = handle.await.unwrap();
    assert_eq!(stats.stored, 251);
    assert_complete(
        &db.store
            .call_events(Scope::Super, call, 0, 1000)
            .await
            .unwrap(),
        251,
    );

    // A database that never answers: viewers still get every event at once.
    let down = Store::open_with(
        "postgres://postgres@127.0.0.1:9/none",
        &OpenOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_millis(300),
            migrate: false,
        },
    )
    .await
    .unwrap();
    let call = CallId::new();
    let mut watcher = hub.subscribe(&call.to_string());
    let (sink, handle) = spawn_event_writer(down, config(&db, 100), None, hub.clone());
    let mut recorder = CallRecorder::new(call, sink);
    record_keys(&mut recorder, 20);
    for seq in 1..=20 {
        let row = tokio::time::timeout(Duration::from_secs(5), watcher.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.seq, seq);
    }
    drop(recorder);
    let stats = handle.await.unwrap();
    assert_eq!((stats.stored, stats.spooled), (0, 20));
}

both!(a_slow_viewer_lags_without_slowing_the_writer, lagging_body);
async fn lagging_body(db: TestDb) {
    let hub = EventHub::new(16);
    let call = CallId::new();
    let mut slow = hub.subscribe(&call.to_string());
    let (sink, handle) = spawn_event_writer(db.store.clone(), config(&db, 100), None, hub.clone());
    let mut recorder = CallRecorder::new(call, sink);
    record_keys(&mut recorder, 500);
    drop(recorder);
    // The writer finishes while the viewer has read nothing.
    let stats = handle.await.unwrap();
    assert_eq!(stats.stored, 500);
    let skipped = match slow.recv().await {
        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => n,
        other => panic!("expected a lag, got {other:?}"),
    };
    assert_eq!(skipped, 484);
    let mut rest = Vec::new();
    while let Ok(row) = slow.try_recv() {
        rest.push(row.seq);
    }
    assert_eq!(rest, (485..=500).collect::<Vec<i64>>());
}

both!(
    bulk_inserts_are_idempotent_and_keep_the_first_version,
    bulk_insert_body
);
async fn bulk_insert_body(db: TestDb) {
    let s = &db.store;
    let call = CallId::new();
    assert_eq!(s.insert_events(&[]).await.unwrap(), 0);
    assert_eq!(
        s.insert_events(&[row(call, 3), row(call, 1)])
            .await
            .unwrap(),
        2
    );
    // A replayed row keeps the first version, also when it comes twice in one batch.
    let mut changed = row(call, 1);
    changed.data = r#"{"digit":"9"}"#.into();
    assert_eq!(
        s.insert_events(&[changed, row(call, 2), row(call, 2)])
            .await
            .unwrap(),
        1
    );
    let got = s.call_events(Scope::Super, call, 0, 100).await.unwrap();
    assert_eq!(got, vec![row(call, 1), row(call, 2), row(call, 3)]);
    // The largest batch the writer sends, with text that needs no escaping by the caller.
    let big = CallId::new();
    let mut rows: Vec<EventRow> = (1..=voicegw::store::events::MAX_BATCH as i64)
        .map(|seq| row(big, seq))
        .collect();
    rows[0].data = r#"{"text":"it's \"quoted\", {braces}, ünïcode, back\\slash"}"#.into();
    assert_eq!(s.insert_events(&rows).await.unwrap(), rows.len() as u64);
    let got = s.call_events(Scope::Super, big, 0, 10_000).await.unwrap();
    assert_eq!(got, rows);
}

/// Records, in `arrivals`, every row as it reaches `call_events`, in order.
async fn note_arrivals(db: &TestDb) -> sqlx::AnyConnection {
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let statements: &[&str] = if db.pg_name.is_some() {
        &[
            "CREATE TABLE arrivals (n BIGSERIAL PRIMARY KEY, call_id TEXT NOT NULL, \
             seq BIGINT NOT NULL)",
            "CREATE FUNCTION note_arrival() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             INSERT INTO arrivals (call_id, seq) VALUES (NEW.call_id, NEW.seq); RETURN NEW; \
             END $$",
            "CREATE TRIGGER call_events_arrival AFTER INSERT ON call_events FOR EACH ROW \
             EXECUTE FUNCTION note_arrival()",
        ]
    } else {
        &[
            "CREATE TABLE arrivals (n INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL, \
             seq BIGINT NOT NULL)",
            "CREATE TRIGGER call_events_arrival AFTER INSERT ON call_events BEGIN \
             INSERT INTO arrivals (call_id, seq) VALUES (NEW.call_id, NEW.seq); END",
        ]
    };
    for sql in statements {
        sqlx::query(*sql).execute(&mut conn).await.unwrap();
    }
    conn
}

both!(
    each_calls_rows_reach_the_database_in_recorded_order,
    arrival_order_body
);
async fn arrival_order_body(db: TestDb) {
    let mut conn = note_arrivals(&db).await;
    let (sink, handle) = spawn_event_writer(
        db.store.clone(),
        config(&db, 200),
        None,
        EventHub::default(),
    );
    let calls: Vec<CallId> = (0..40).map(|_| CallId::new()).collect();
    let mut recorders: Vec<CallRecorder> = calls
        .iter()
        .map(|call| CallRecorder::new(*call, sink.clone()))
        .collect();
    drop(sink);
    for i in 0..12_000 {
        record_keys(&mut recorders[i % calls.len()], 1);
    }
    drop(recorders);
    let stats = handle.await.unwrap();
    assert_eq!((stats.stored, stats.spooled), (12_000, 0), "{stats:?}");
    // On PostgreSQL each batch of 200 goes in two concurrent parts.
    let least = if db.pg_name.is_some() { 120 } else { 60 };
    assert!(stats.batches >= least, "{stats:?}");
    let arrivals: Vec<(String, i64)> =
        sqlx::query_as("SELECT call_id, seq FROM arrivals ORDER BY n")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(arrivals.len(), 12_000);
    for call in &calls {
        let id = call.to_string();
        let seqs: Vec<i64> = arrivals
            .iter()
            .filter(|(c, _)| *c == id)
            .map(|(_, seq)| *seq)
            .collect();
        assert_eq!(seqs, (1..=300).collect::<Vec<_>>(), "call {id}");
    }
    conn.close().await.unwrap();
}
