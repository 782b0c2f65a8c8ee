//! The dialer's job queue on SQLite and PostgreSQL: claims are exclusive between workers,
//! live-call caps hold after every claim, leases are taken over, and each transition
//! applies once.

mod common;

use std::collections::{BTreeMap, HashSet};

use voicegw::store::call_records::CallSetup;
use voicegw::store::calls::{CallStatus, Direction, NewCall};
use voicegw::store::dial_jobs::{AttemptEnd, JobState, SmsResult};
use voicegw::store::tenants::Plan;
use voicegw::store::{Scope, Store, TenantId, now_us};

use common::db::TestDb;

/// A running campaign of `tenant` with `contacts` jobs due now; returns its id.
async fn campaign(
    raw: &sqlx::AnyPool,
    tenant: TenantId,
    max_concurrency: i64,
    contacts: usize,
    sms: Option<&str>,
) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_us();
    sqlx::query(
        "INSERT INTO campaigns (id, tenant_id, name, status, agent, caller_ids, carrier, \
         calling_window, retry_policy, max_concurrency, sms_fallback, contacts, created_us, \
         updated_us) VALUES ($1, $2, 'c', 'running', 'echo', '[\"+14155550100\"]', 'twilio', \
         '{\"timezone\":\"UTC\",\"open\":[\"daily 00:00-24:00\"]}', '{}', $3, $4, $5, $6, $6)",
    )
    .bind(id.clone())
    .bind(tenant.to_string())
    .bind(max_concurrency)
    .bind(sms.map(str::to_owned))
    .bind(contacts as i64)
    .bind(now)
    .execute(raw)
    .await
    .unwrap();
    for chunk in (0..contacts).collect::<Vec<_>>().chunks(200) {
        let mut sql = String::from(
            "INSERT INTO dial_jobs (id, campaign_id, tenant_id, position, phone, state, due_us, \
             created_us, updated_us) VALUES ",
        );
        for (i, _) in chunk.iter().enumerate() {
            let b = i * 5;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, 'pending', 0, 0, 0)",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5
            ));
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for &position in chunk {
            query = query
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(id.clone())
                .bind(tenant.to_string())
                .bind(position as i64)
                .bind(format!("+1415555{:04}", position % 10_000));
        }
        query.execute(raw).await.unwrap();
    }
    id
}

/// A raw pool on the test database (for fixtures and checks the store has no API for), and
/// a tenant.
async fn setup(db: &TestDb) -> (sqlx::AnyPool, TenantId) {
    sqlx::any::install_default_drivers();
    let url = if db.is_postgres() {
        db.url.clone()
    } else {
        format!("{}?mode=rwc", db.url)
    };
    let raw = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    let tenant = db.store.create_tenant("acme", Plan::Full).await.unwrap().id;
    (raw, tenant)
}

async fn scalar(raw: &sqlx::AnyPool, sql: &str, arg: &str) -> i64 {
    use sqlx::Row;
    let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(arg.to_owned())
        .fetch_one(raw)
        .await
        .unwrap();
    row.try_get::<i64, _>(0).unwrap()
}

async fn live(raw: &sqlx::AnyPool, campaign: &str) -> i64 {
    scalar(
        raw,
        "SELECT live_calls FROM campaigns WHERE id = $1",
        campaign,
    )
    .await
}

async fn holding(raw: &sqlx::AnyPool, campaign: &str) -> i64 {
    scalar(
        raw,
        "SELECT COUNT(*) FROM dial_jobs WHERE campaign_id = $1 AND state IN ('claimed', 'dialing')",
        campaign,
    )
    .await
}

fn new_call(to: &str) -> (NewCall, CallSetup) {
    (
        NewCall {
            direction: Direction::Outbound,
            from: "+14155550100".into(),
            to: to.into(),
            carrier: "twilio".into(),
            carrier_sid: None,
        },
        CallSetup {
            agent: "echo".into(),
            variables: BTreeMap::from([("name".to_owned(), "Ana".to_owned())]),
            ..CallSetup::default()
        },
    )
}

const LEASE_US: i64 = 60_000_000;

async fn two_workers_claim_each_job_once(db: TestDb) {
    let (raw, tenant) = setup(&db).await;
    let mut campaigns = Vec::new();
    for _ in 0..4 {
        campaigns.push(campaign(&raw, tenant, 100_000, 500, None).await);
    }
    let second = Store::open(&db.url).await.unwrap();
    let claim_all = |store: Store, raw: sqlx::AnyPool, worker: &'static str| async move {
        let mut got = Vec::new();
        loop {
            let now = now_us();
            let jobs = store
                .claim_jobs(worker, now, now + LEASE_US, 37)
                .await
                .unwrap();
            if jobs.is_empty() {
                // Empty while the other holds every campaign, or the queue is drained.
                let pending = scalar(
                    &raw,
                    "SELECT COUNT(*) FROM dial_jobs WHERE state = $1",
                    "pending",
                )
                .await;
                if pending == 0 {
                    return got;
                }
                tokio::task::yield_now().await;
                continue;
            }
            assert!(jobs.len() <= 37);
            for job in jobs {
                assert_eq!(job.state, JobState::Claimed);
                assert_eq!(job.lease_owner.as_deref(), Some(worker));
                got.push(job.id);
            }
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(claim_all(db.store.clone(), raw.clone(), "worker-a")),
        tokio::spawn(claim_all(second.clone(), raw.clone(), "worker-b")),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    // PostgreSQL claims run side by side (SKIP LOCKED), so both workers get jobs. SQLite has
    // one writer and its busy handler is not fair: one pool may take every job, which is
    // still correct; what matters on both is that no job is claimed twice.
    if db.is_postgres() {
        assert!(
            !a.is_empty() && !b.is_empty(),
            "both workers claimed: {} / {}",
            a.len(),
            b.len()
        );
    }
    let all: HashSet<&String> = a.iter().chain(b.iter()).collect();
    assert_eq!(a.len() + b.len(), 2000, "every job claimed exactly once");
    assert_eq!(all.len(), 2000);
    for campaign in &campaigns {
        assert_eq!(live(&raw, campaign).await, 500);
        assert_eq!(holding(&raw, campaign).await, 500);
    }
    let tenant_live = scalar(
        &raw,
        "SELECT live_calls FROM dialer_tenants WHERE tenant_id = $1",
        &tenant.to_string(),
    )
    .await;
    assert_eq!(tenant_live, 2000);
    second.close().await;
}
on_both!(
    two_workers_claim_each_job_once,
    two_workers_claim_each_job_once
);

async fn caps_hold_after_every_claim(db: TestDb) {
    let (raw, tenant) = setup(&db).await;
    sqlx::query("INSERT INTO dialer_tenants (tenant_id, max_live_calls) VALUES ($1, 10)")
        .bind(tenant.to_string())
        .execute(&raw)
        .await
        .unwrap();
    let c1 = campaign(&raw, tenant, 7, 300, None).await;
    let c2 = campaign(&raw, tenant, 6, 300, None).await;
    let second = Store::open(&db.url).await.unwrap();
    let work = |store: Store, raw: sqlx::AnyPool, worker: &'static str, c1: String, c2: String| async move {
        let mut held: Vec<String> = Vec::new();
        for round in 0..40 {
            let now = now_us();
            let jobs = store
                .claim_jobs(worker, now, now + LEASE_US, 5)
                .await
                .unwrap();
            held.extend(jobs.into_iter().map(|j| j.id));
            let l1 = live(&raw, &c1).await;
            let l2 = live(&raw, &c2).await;
            assert!(l1 <= 7, "campaign cap: {l1}");
            assert!(l2 <= 6, "campaign cap: {l2}");
            assert!(l1 + l2 <= 10, "tenant cap: {l1} + {l2}");
            // Free a few slots (given back, due again at once).
            let keep = held.len() / 2 + round % 2;
            for id in held.split_off(keep.min(held.len())) {
                assert!(store.give_back(&id, worker, now_us()).await.unwrap());
            }
        }
        held
    };
    let (a, b) = tokio::join!(
        tokio::spawn(work(
            db.store.clone(),
            raw.clone(),
            "worker-a",
            c1.clone(),
            c2.clone()
        )),
        tokio::spawn(work(
            second.clone(),
            raw.clone(),
            "worker-b",
            c1.clone(),
            c2.clone()
        )),
    );
    let held = a.unwrap().len() + b.unwrap().len();
    let (l1, l2) = (live(&raw, &c1).await, live(&raw, &c2).await);
    assert_eq!(l1, holding(&raw, &c1).await, "counter exact");
    assert_eq!(l2, holding(&raw, &c2).await, "counter exact");
    assert_eq!((l1 + l2) as usize, held);
    let tenant_live = scalar(
        &raw,
        "SELECT live_calls FROM dialer_tenants WHERE tenant_id = $1",
        &tenant.to_string(),
    )
    .await;
    assert_eq!(tenant_live, l1 + l2);
    assert!(tenant_live <= 10);
    second.close().await;
}
on_both!(caps_hold_after_every_claim, caps_hold_after_every_claim);

async fn leases_expire_and_are_taken_over(db: TestDb) {
    let (raw, tenant) = setup(&db).await;
    let c = campaign(&raw, tenant, 10, 3, None).await;
    let store = &db.store;
    let now = now_us();
    // Worker A claims with a lease that is already over by `later`, then dies.
    let jobs = store
        .claim_jobs("worker-a", now, now + 1_000, 3)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 3);
    let (new, setup) = new_call(&jobs[1].phone);
    let dialing = store
        .start_attempt(&jobs[1].id, "worker-a", now, &new, &setup)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dialing.status, CallStatus::Queued);
    // Another worker cannot start what it does not hold.
    assert!(
        store
            .start_attempt(&jobs[2].id, "worker-b", now, &new, &setup)
            .await
            .unwrap()
            .is_none()
    );
    let later = now + 2_000;
    // A start after the lease ran out is refused too.
    assert!(
        store
            .start_attempt(&jobs[2].id, "worker-a", later, &new, &setup)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(live(&raw, &c).await, 3);
    let expired = store.expired_leases(later, 100).await.unwrap();
    assert_eq!(expired.len(), 3);
    for job in &expired {
        match job.state {
            JobState::Claimed => assert!(store.take_over_claimed(&job.id, later).await.unwrap()),
            JobState::Dialing => {
                assert_eq!(job.id, jobs[1].id);
                assert!(
                    store
                        .adopt_dialing(&job.id, "worker-b", later, later + LEASE_US)
                        .await
                        .unwrap()
                );
                // Adopted once.
                assert!(
                    !store
                        .adopt_dialing(&job.id, "worker-c", later, later + LEASE_US)
                        .await
                        .unwrap()
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(live(&raw, &c).await, 1, "claimed jobs freed their slots");
    assert!(
        !store.take_over_claimed(&jobs[0].id, later).await.unwrap(),
        "applies once"
    );
    // The dialing job had no carrier id and the carrier has no such call: undone.
    let call_id = dialing.id.to_string();
    assert!(
        store
            .abandon_attempt(&jobs[1].id, &call_id, later, "not placed")
            .await
            .unwrap()
    );
    assert!(
        !store
            .abandon_attempt(&jobs[1].id, &call_id, later, "not placed")
            .await
            .unwrap()
    );
    let job = store.dial_job(&jobs[1].id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(
        job.attempts, 0,
        "an attempt the carrier never got is not counted"
    );
    let call = store
        .get_call(Scope::Super, dialing.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.status, CallStatus::Failed);
    assert_eq!(call.error.as_deref(), Some("not placed"));
    assert_eq!(live(&raw, &c).await, 0);
    assert!(store.expired_leases(later, 100).await.unwrap().is_empty());
    // All three are claimable again.
    let again = store
        .claim_jobs("worker-b", later, later + LEASE_US, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 3);
}
on_both!(
    leases_expire_and_are_taken_over,
    leases_expire_and_are_taken_over
);

async fn attempts_finish_once(db: TestDb) {
    let (raw, tenant) = setup(&db).await;
    let c = campaign(&raw, tenant, 10, 2, Some("Sorry we missed you, {{ name }}")).await;
    let store = &db.store;
    let now = now_us();
    let jobs = store.claim_jobs("w", now, now + LEASE_US, 2).await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        jobs[0].campaign.sms_fallback.as_deref(),
        Some("Sorry we missed you, {{ name }}")
    );
    let mut calls = Vec::new();
    for job in &jobs {
        let (new, setup) = new_call(&job.phone);
        let call = store
            .start_attempt(&job.id, "w", now, &new, &setup)
            .await
            .unwrap()
            .unwrap();
        let scope = Scope::Tenant(tenant);
        store
            .advance_call_status(scope, call.id, CallStatus::NoAnswer)
            .await
            .unwrap();
        calls.push(call);
    }
    let finals = store.dialing_jobs_with_final_calls(100).await.unwrap();
    assert_eq!(finals.len(), 2);
    assert!(
        finals
            .iter()
            .all(|(j, c)| j.call_id.as_deref() == Some(&c.id.to_string()[..]))
    );
    // Job 0 retries, job 1 ends with an SMS due; each applies once.
    let retry = AttemptEnd::Retry {
        due_us: now + 5_000_000,
    };
    let id0 = calls[0].id.to_string();
    assert!(
        store
            .finish_attempt(&jobs[0].id, &id0, "no_answer", &retry)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_attempt(&jobs[0].id, &id0, "no_answer", &retry)
            .await
            .unwrap()
    );
    let end = AttemptEnd::Final {
        reason: "max_attempts".into(),
        sms_due: true,
    };
    let id1 = calls[1].id.to_string();
    assert!(
        store
            .finish_attempt(&jobs[1].id, &id1, "no_answer", &end)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_attempt(&jobs[1].id, &id1, "no_answer", &end)
            .await
            .unwrap()
    );
    assert_eq!(live(&raw, &c).await, 0, "each freed its slot once");
    let j0 = store.dial_job(&jobs[0].id).await.unwrap().unwrap();
    assert_eq!(
        (j0.state, j0.attempts, j0.due_us),
        (JobState::Pending, 1, now + 5_000_000)
    );
    assert_eq!(j0.last_outcome.as_deref(), Some("no_answer"));
    assert_eq!(j0.sms_state, None);
    let j1 = store.dial_job(&jobs[1].id).await.unwrap().unwrap();
    assert_eq!(j1.state, JobState::Done);
    assert_eq!(j1.final_reason.as_deref(), Some("max_attempts"));
    assert_eq!(j1.sms_state.as_deref(), Some("due"));
    // The retry is not due yet; then it is, and its next attempt is attempt 2.
    assert!(
        store
            .claim_jobs("w", now, now + LEASE_US, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let later = now + 6_000_000;
    let again = store
        .claim_jobs("w", later, later + LEASE_US, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    let (new, setup) = new_call(&again[0].phone);
    let second = store
        .start_attempt(&again[0].id, "w", later, &new, &setup)
        .await
        .unwrap()
        .unwrap();
    use sqlx::Row;
    let rows = sqlx::query("SELECT attempt FROM calls WHERE job_id = $1 ORDER BY attempt")
        .bind(jobs[0].id.clone())
        .fetch_all(&raw)
        .await
        .unwrap();
    let attempts: Vec<i64> = rows.iter().map(|r| r.try_get(0).unwrap()).collect();
    assert_eq!(attempts, vec![1, 2]);
    assert_ne!(second.id, calls[0].id);
    // SMS: two claimers, one text.
    let other = Store::open(&db.url).await.unwrap();
    let (a, b) = tokio::join!(
        store.claim_sms("w1", now_us() + LEASE_US, 10),
        other.claim_sms("w2", now_us() + LEASE_US, 10)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 1, "one claimer gets the text");
    let (owner, job) = if a.is_empty() {
        ("w2", &b[0])
    } else {
        ("w1", &a[0])
    };
    assert_eq!(job.id, jobs[1].id);
    assert!(
        !store
            .finish_sms(&job.id, "someone-else", &SmsResult::Sent("SM1".into()))
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_sms(&job.id, owner, &SmsResult::Sent("SM1".into()))
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_sms(&job.id, owner, &SmsResult::Sent("SM2".into()))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .dial_job(&job.id)
            .await
            .unwrap()
            .unwrap()
            .sms_state
            .as_deref(),
        Some("sent")
    );
    other.close().await;
}
on_both!(attempts_finish_once, attempts_finish_once);

async fn expired_sms_sends_are_never_resent(db: TestDb) {
    let (raw, tenant) = setup(&db).await;
    let _c = campaign(&raw, tenant, 10, 1, Some("hi")).await;
    let store = &db.store;
    let now = now_us();
    let jobs = store.claim_jobs("w", now, now + LEASE_US, 1).await.unwrap();
    let (new, setup) = new_call(&jobs[0].phone);
    let call = store
        .start_attempt(&jobs[0].id, "w", now, &new, &setup)
        .await
        .unwrap()
        .unwrap();
    store
        .advance_call_status(Scope::Tenant(tenant), call.id, CallStatus::Busy)
        .await
        .unwrap();
    let end = AttemptEnd::Final {
        reason: "not_retried".into(),
        sms_due: true,
    };
    assert!(
        store
            .finish_attempt(&jobs[0].id, &call.id.to_string(), "busy", &end)
            .await
            .unwrap()
    );
    // The sender dies mid-send: its lease runs out.
    let claimed = store.claim_sms("w", now + 1_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(store.expire_sms(now + 2_000).await.unwrap(), 1);
    assert!(
        store
            .claim_sms("w2", now_us() + LEASE_US, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let job = store.dial_job(&jobs[0].id).await.unwrap().unwrap();
    assert_eq!(job.sms_state.as_deref(), Some("unknown"));
    assert!(
        !store
            .finish_sms(&job.id, "w", &SmsResult::Sent("SM1".into()))
            .await
            .unwrap()
    );
}
on_both!(
    expired_sms_sends_are_never_resent,
    expired_sms_sends_are_never_resent
);

async fn gateway_wide_tenant_cap_applies(db: TestDb) {
    let (raw, tenant) = setup(&db).await;
    let c = campaign(&raw, tenant, 100, 20, None).await;
    let store = &db.store;
    let now = now_us();
    let first = store
        .claim_jobs_capped("w", now, now + LEASE_US, 10, Some(4))
        .await
        .unwrap();
    assert_eq!(first.len(), 4, "no tenant row: the gateway's cap alone");
    assert!(
        store
            .claim_jobs_capped("w", now, now + LEASE_US, 10, Some(4))
            .await
            .unwrap()
            .is_empty()
    );
    // The tenant's own, lower cap wins.
    sqlx::query("UPDATE dialer_tenants SET max_live_calls = 2 WHERE tenant_id = $1")
        .bind(tenant.to_string())
        .execute(&raw)
        .await
        .unwrap();
    assert!(store.give_back(&first[0].id, "w", now).await.unwrap());
    assert!(store.give_back(&first[1].id, "w", now).await.unwrap());
    assert!(store.give_back(&first[2].id, "w", now).await.unwrap());
    let again = store
        .claim_jobs_capped("w", now, now + LEASE_US, 10, Some(4))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(live(&raw, &c).await, 2);
}
on_both!(
    gateway_wide_tenant_cap_applies,
    gateway_wide_tenant_cap_applies
);

async fn stale_attempts_are_looked_up_once_per_period(db: TestDb) {
    use voicegw::store::call_records::CarrierReport;
    const S: i64 = 1_000_000;
    let (raw, tenant) = setup(&db).await;
    campaign(&raw, tenant, 10, 2, None).await;
    let store = &db.store;
    let now = now_us();
    let jobs = store
        .claim_jobs("worker-a", now, now + 60 * S, 2)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    let mut calls = Vec::new();
    for job in &jobs {
        let (new, setup) = new_call(&job.phone);
        let call = store
            .start_attempt(&job.id, "worker-a", now, &new, &setup)
            .await
            .unwrap()
            .unwrap();
        calls.push(call);
    }
    // The first attempt reached the carrier (its id recorded); the second did not say.
    let placed = CarrierReport {
        carrier_sid: Some("CA00000000000000000000000000000001".into()),
        ..CarrierReport::default()
    };
    let scope = Scope::Tenant(tenant);
    store
        .record_carrier_report(scope, calls[0].id, &placed)
        .await
        .unwrap();
    let touched = now_us();
    let periods = (5, 2);
    let listed = |worker: &'static str, at: i64| async move {
        let mut ids: Vec<String> = store
            .stale_attempts(at, worker, periods, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, call)| call.id.to_string())
            .collect();
        ids.sort();
        ids
    };
    let id = |i: usize| calls[i].id.to_string();
    assert!(
        listed("worker-a", touched + S).await.is_empty(),
        "nothing stale yet"
    );
    // No carrier id past `unplaced`: its holder looks it up; another worker leaves it to
    // the holder (a live worker may still be placing it).
    assert_eq!(listed("worker-a", touched + 3 * S).await, vec![id(1)]);
    assert!(listed("worker-b", touched + 3 * S).await.is_empty());
    // No change past `stale`: the placed attempt is looked up by anyone.
    assert_eq!(listed("worker-b", touched + 6 * S).await, vec![id(0)]);
    // A look (the carrier says it is still live) counts as a change: not again for a period.
    store
        .record_carrier_report(scope, calls[0].id, &CarrierReport::default())
        .await
        .unwrap();
    let looked = now_us();
    assert!(!listed("worker-b", looked + 4 * S).await.contains(&id(0)));
    assert!(listed("worker-b", looked + 6 * S).await.contains(&id(0)));
    // Once the holder's lease is over, anyone looks the unplaced attempt up.
    assert!(listed("worker-b", now + 61 * S).await.contains(&id(1)));
    // A final call is never looked up.
    store
        .advance_call_status(scope, calls[0].id, CallStatus::Busy)
        .await
        .unwrap();
    assert!(
        !listed("worker-b", looked + 3_600 * S)
            .await
            .contains(&id(0))
    );
}
on_both!(
    stale_attempts_are_looked_up_once_per_period,
    stale_attempts_are_looked_up_once_per_period
);
