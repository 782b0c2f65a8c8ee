//! Campaigns in the store on SQLite and PostgreSQL: a bulk upload of 100,000 contacts (rate
//! printed), duplicates skipped, positions continued across uploads, an upload rolled back
//! whole on a bad contact, status transitions (and the refused ones), cancel freeing the
//! claimed jobs' live-call slots, completion, progress counts, job listings and tenant caps.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::db::TestDb;
use voicegw::dialer::retry::RetryPolicyConfig;
use voicegw::dialer::window::CallingWindowConfig;
use voicegw::store::campaigns::{
    AddedContacts, CampaignAction, CampaignCursor, CampaignError, CampaignId, CampaignStatus,
    NewCampaign, NewContact,
};
use voicegw::store::tenants::Plan;
use voicegw::store::{Scope, StoreError, TenantId};

fn new_campaign(name: &str) -> NewCampaign {
    NewCampaign {
        name: name.into(),
        agent: "echo".into(),
        script_id: None,
        caller_ids: vec!["+14155550199".into()],
        carrier: "twilio".into(),
        calling_window: CallingWindowConfig {
            timezone: "America/New_York".into(),
            open: vec!["daily 09:00-20:00".into()],
            closed_dates: vec![],
        },
        retry_policy: RetryPolicyConfig::default(),
        max_concurrency: 10,
        starts_at_us: None,
        ends_at_us: None,
        machine_detection: Some("enable".into()),
        timeout_secs: Some(30),
        time_limit_secs: None,
        record: true,
        voicemail_message: Some("Hi {{name}}".into()),
        sms_fallback: None,
        variables: BTreeMap::from([("org".to_string(), "Acme".to_string())]),
    }
}

fn contact(i: u64) -> NewContact {
    NewContact {
        phone: format!("+1415{:07}", i),
        variables: BTreeMap::from([("name".to_string(), format!("n{i}"))]),
        timezone: i.is_multiple_of(2).then(|| "Europe/London".to_string()),
    }
}

async fn tenant(db: &TestDb, name: &str) -> TenantId {
    db.store.create_tenant(name, Plan::Full).await.unwrap().id
}

/// Runs raw SQL (test set-up of worker-owned states).
async fn exec(db: &TestDb, sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

on_both!(bulk_insert_of_100k, bulk_body);
async fn bulk_body(db: TestDb) {
    let t = tenant(&db, "acme").await;
    let scope = Scope::Tenant(t);
    let c = db
        .store
        .create_campaign(t, &new_campaign("big"))
        .await
        .unwrap();
    let contacts: Vec<NewContact> = (0..100_000).map(contact).collect();
    let started = Instant::now();
    let added = db.store.add_contacts(scope, c.id, &contacts).await.unwrap();
    let took = started.elapsed();
    println!(
        "{}: 100000 contacts in {:.2} s = {:.0} contacts/s",
        if db.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        },
        took.as_secs_f64(),
        100_000.0 / took.as_secs_f64()
    );
    assert_eq!(
        added,
        AddedContacts {
            added: 100_000,
            duplicates: 0
        }
    );
    let progress = db.store.campaign_progress(scope, c.id).await.unwrap();
    assert_eq!((progress.total, progress.pending), (100_000, 100_000));
    let c = db.store.campaign(scope, c.id).await.unwrap().unwrap();
    assert_eq!(c.contacts, 100_000);
    let last = db
        .store
        .list_jobs(scope, c.id, None, Some(99_997), 10)
        .await
        .unwrap();
    assert_eq!(
        last.iter().map(|j| j.position).collect::<Vec<_>>(),
        [99_998, 99_999]
    );
    assert_eq!(last[1].phone, contact(99_999).phone);
}

on_both!(duplicates_and_positions, duplicates_body);
async fn duplicates_body(db: TestDb) {
    let t = tenant(&db, "acme").await;
    let scope = Scope::Tenant(t);
    let mut new = new_campaign("dups");
    let start = 4_000_000_000_000_000;
    new.starts_at_us = Some(start);
    let c = db.store.create_campaign(t, &new).await.unwrap();
    assert_eq!(c.status, CampaignStatus::Draft);
    assert_eq!(c.variables["org"], "Acme");
    assert_eq!(c.calling_window.timezone, "America/New_York");
    assert!(c.record);
    assert_eq!(c.timeout_secs, Some(30));
    let first = [contact(1), contact(2), contact(1)];
    let added = db.store.add_contacts(scope, c.id, &first).await.unwrap();
    assert_eq!(
        added,
        AddedContacts {
            added: 2,
            duplicates: 1
        }
    );
    let second = [contact(2), contact(3)];
    let added = db.store.add_contacts(scope, c.id, &second).await.unwrap();
    assert_eq!(
        added,
        AddedContacts {
            added: 1,
            duplicates: 1
        }
    );
    let jobs = db
        .store
        .list_jobs(scope, c.id, None, None, 100)
        .await
        .unwrap();
    let got: Vec<(i64, &str)> = jobs
        .iter()
        .map(|j| (j.position, j.phone.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (0, contact(1).phone.as_str()),
            (1, contact(2).phone.as_str()),
            (2, contact(3).phone.as_str())
        ]
    );
    // Due no earlier than the campaign's start.
    assert!(
        jobs.iter()
            .all(|j| j.due_us == start && j.state == "pending")
    );

    // A bad contact rolls the whole upload back.
    let bad = [
        contact(4),
        NewContact {
            phone: "555-0100".into(),
            ..NewContact::default()
        },
    ];
    let err = db.store.add_contacts(scope, c.id, &bad).await.unwrap_err();
    assert!(
        matches!(err, CampaignError::Store(StoreError::Invalid(_))),
        "{err:?}"
    );
    let zone = [NewContact {
        phone: "+14155550999".into(),
        timezone: Some("Mars/Base".into()),
        ..NewContact::default()
    }];
    assert!(db.store.add_contacts(scope, c.id, &zone).await.is_err());
    let c = db.store.campaign(scope, c.id).await.unwrap().unwrap();
    assert_eq!(c.contacts, 3);
    assert_eq!(
        db.store.campaign_progress(scope, c.id).await.unwrap().total,
        3
    );

    // Created with contacts in one transaction: all or nothing.
    let (started, added) = db
        .store
        .create_campaign_with_contacts(t, &new_campaign("at once"), &[contact(1), contact(1)], true)
        .await
        .unwrap();
    assert_eq!(
        (started.status, started.contacts),
        (CampaignStatus::Running, 1)
    );
    assert_eq!((added.added, added.duplicates), (1, 1));
    let before = db
        .store
        .list_campaigns(scope, None, 100)
        .await
        .unwrap()
        .len();
    assert!(
        db.store
            .create_campaign_with_contacts(t, &new_campaign("bad"), &bad, false)
            .await
            .is_err()
    );
    assert_eq!(
        db.store
            .list_campaigns(scope, None, 100)
            .await
            .unwrap()
            .len(),
        before
    );

    // Another tenant sees nothing and adds nothing.
    let other = Scope::Tenant(tenant(&db, "other").await);
    assert!(db.store.campaign(other, c.id).await.unwrap().is_none());
    assert!(matches!(
        db.store.add_contacts(other, c.id, &[contact(9)]).await,
        Err(CampaignError::Store(StoreError::NotFound(_)))
    ));
    assert!(matches!(
        db.store.list_jobs(other, c.id, None, None, 10).await,
        Err(StoreError::NotFound(_))
    ));
}

on_both!(transitions, transitions_body);
async fn transitions_body(db: TestDb) {
    let t = tenant(&db, "acme").await;
    let scope = Scope::Tenant(t);
    let c = db
        .store
        .create_campaign(t, &new_campaign("flow"))
        .await
        .unwrap();
    let set = |a| db.store.set_campaign_status(scope, c.id, a);
    let invalid = |r: Result<_, CampaignError>, action: &str, from: &str| match r {
        Err(CampaignError::InvalidTransition { action: a, from: f }) => {
            assert_eq!((a, f), (action, from))
        }
        other => panic!("expected an invalid transition, got {other:?}"),
    };
    invalid(set(CampaignAction::Pause).await, "pause", "draft");
    invalid(set(CampaignAction::Resume).await, "resume", "draft");
    assert_eq!(
        set(CampaignAction::Start).await.unwrap().status,
        CampaignStatus::Running
    );
    invalid(set(CampaignAction::Start).await, "start", "running");
    assert_eq!(
        set(CampaignAction::Pause).await.unwrap().status,
        CampaignStatus::Paused
    );
    invalid(set(CampaignAction::Pause).await, "pause", "paused");
    assert_eq!(
        set(CampaignAction::Resume).await.unwrap().status,
        CampaignStatus::Running
    );
    assert_eq!(
        set(CampaignAction::Cancel).await.unwrap().status,
        CampaignStatus::Canceled
    );
    invalid(set(CampaignAction::Cancel).await, "cancel", "canceled");
    invalid(set(CampaignAction::Resume).await, "resume", "canceled");
    assert!(matches!(
        db.store.add_contacts(scope, c.id, &[contact(1)]).await,
        Err(CampaignError::Ended("canceled"))
    ));
    let missing = CampaignId::new();
    assert!(matches!(
        db.store
            .set_campaign_status(scope, missing, CampaignAction::Start)
            .await,
        Err(CampaignError::Store(StoreError::NotFound(_)))
    ));

    // Listing: newest first, paged by cursor, per tenant.
    let c2 = db
        .store
        .create_campaign(t, &new_campaign("second"))
        .await
        .unwrap();
    let page = db.store.list_campaigns(scope, None, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, c2.id);
    let next = db
        .store
        .list_campaigns(scope, Some(CampaignCursor::after(&page[0])), 10)
        .await
        .unwrap();
    assert_eq!(next.iter().map(|c| c.id).collect::<Vec<_>>(), [c.id]);
    let other = Scope::Tenant(tenant(&db, "other").await);
    assert!(
        db.store
            .list_campaigns(other, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        db.store
            .list_campaigns(Scope::Super, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

on_both!(cancel_fixes_counters_and_progress, cancel_body);
async fn cancel_body(db: TestDb) {
    let t = tenant(&db, "acme").await;
    let scope = Scope::Tenant(t);
    db.store.set_tenant_dialer_limit(t, Some(5)).await.unwrap();
    let c = db
        .store
        .create_campaign(t, &new_campaign("cancel"))
        .await
        .unwrap();
    let contacts: Vec<NewContact> = (0..10).map(contact).collect();
    db.store.add_contacts(scope, c.id, &contacts).await.unwrap();
    db.store
        .set_campaign_status(scope, c.id, CampaignAction::Start)
        .await
        .unwrap();
    // What workers would have done: positions 0-1 claimed, 2 dialing, 3-4 done (one with an
    // attempt on record and an SMS sent), the rest pending; 3 live calls.
    let id = c.id.to_string();
    exec(
        &db,
        &format!(
            "UPDATE dial_jobs SET state = 'claimed', lease_owner = 'w1', lease_until_us = 1 \
         WHERE campaign_id = '{id}' AND position IN (0, 1)"
        ),
    )
    .await;
    exec(&db, &format!(
        "UPDATE dial_jobs SET state = 'dialing', attempts = 1 WHERE campaign_id = '{id}' AND position = 2"
    ))
    .await;
    exec(
        &db,
        &format!(
            "UPDATE dial_jobs SET state = 'done', attempts = 1, final_reason = 'completed', \
         last_outcome = 'completed' WHERE campaign_id = '{id}' AND position = 3"
        ),
    )
    .await;
    exec(
        &db,
        &format!(
            "UPDATE dial_jobs SET state = 'done', attempts = 2, final_reason = 'max_attempts', \
         last_outcome = 'no_answer', sms_state = 'sent' WHERE campaign_id = '{id}' AND position = 4"
        ),
    )
    .await;
    exec(
        &db,
        &format!("UPDATE campaigns SET live_calls = 3 WHERE id = '{id}'"),
    )
    .await;
    exec(
        &db,
        &format!("UPDATE dialer_tenants SET live_calls = 4 WHERE tenant_id = '{t}'"),
    )
    .await;
    let job4 = db
        .store
        .list_jobs(scope, c.id, Some("done"), None, 10)
        .await
        .unwrap();
    assert_eq!(job4.len(), 2);
    exec(&db, &format!(
        "INSERT INTO calls (id, tenant_id, direction, status, from_number, to_number, carrier, \
         created_us, updated_us, agent, variables, job_id, attempt) VALUES \
         ('{}', '{t}', 'outbound', 'completed', '+14155550199', '{}', 'twilio', 1, 1, 'echo', '{{}}', '{}', 1)",
        uuid::Uuid::new_v4(), job4[0].phone, job4[0].id
    ))
    .await;

    let p = db.store.campaign_progress(scope, c.id).await.unwrap();
    assert_eq!(
        (p.total, p.pending, p.claimed, p.dialing, p.done, p.canceled),
        (10, 5, 2, 1, 2, 0)
    );
    assert_eq!(p.final_reasons["completed"], 1);
    assert_eq!(p.final_reasons["max_attempts"], 1);
    assert_eq!(p.outcomes["no_answer"], 1);
    assert_eq!((p.attempts, p.live_calls, p.sms_sent), (1, 3, 1));

    let canceled = db
        .store
        .set_campaign_status(scope, c.id, CampaignAction::Cancel)
        .await
        .unwrap();
    assert_eq!(canceled.status, CampaignStatus::Canceled);
    // The two claimed slots are freed; the dialing one stays until its attempt ends.
    assert_eq!(canceled.live_calls, 1);
    let cap = db.store.tenant_dialer_limit(t).await.unwrap();
    assert_eq!((cap.max_live_calls, cap.live_calls), (Some(5), 2));
    let p = db.store.campaign_progress(scope, c.id).await.unwrap();
    assert_eq!(
        (p.pending, p.claimed, p.dialing, p.done, p.canceled),
        (0, 0, 1, 2, 7)
    );
    let canceled_jobs = db
        .store
        .list_jobs(scope, c.id, Some("canceled"), None, 100)
        .await
        .unwrap();
    assert!(
        canceled_jobs
            .iter()
            .all(|j| j.final_reason.as_deref() == Some("campaign_canceled"))
    );
    assert!(matches!(
        db.store
            .list_jobs(scope, c.id, Some("bogus"), None, 10)
            .await,
        Err(StoreError::Invalid(_))
    ));
}

on_both!(completion_and_caps, completion_body);
async fn completion_body(db: TestDb) {
    let t = tenant(&db, "acme").await;
    let scope = Scope::Tenant(t);
    let c = db
        .store
        .create_campaign(t, &new_campaign("done"))
        .await
        .unwrap();
    let empty = db
        .store
        .create_campaign(t, &new_campaign("empty"))
        .await
        .unwrap();
    db.store
        .add_contacts(scope, c.id, &[contact(1), contact(2)])
        .await
        .unwrap();
    for id in [c.id, empty.id] {
        db.store
            .set_campaign_status(scope, id, CampaignAction::Start)
            .await
            .unwrap();
    }
    assert_eq!(db.store.complete_finished_campaigns().await.unwrap(), 0);
    let id = c.id.to_string();
    exec(&db, &format!(
        "UPDATE dial_jobs SET state = 'done', final_reason = 'completed' WHERE campaign_id = '{id}' AND position = 0"
    ))
    .await;
    assert_eq!(db.store.complete_finished_campaigns().await.unwrap(), 0);
    exec(&db, &format!(
        "UPDATE dial_jobs SET state = 'done', final_reason = 'max_attempts' WHERE campaign_id = '{id}'  AND position = 1"
    ))
    .await;
    assert_eq!(db.store.complete_finished_campaigns().await.unwrap(), 1);
    assert_eq!(db.store.complete_finished_campaigns().await.unwrap(), 0);
    let got = db.store.campaign(scope, c.id).await.unwrap().unwrap();
    assert_eq!(got.status, CampaignStatus::Completed);
    // A running campaign without contacts waits for them.
    let got = db.store.campaign(scope, empty.id).await.unwrap().unwrap();
    assert_eq!(got.status, CampaignStatus::Running);
    assert!(matches!(
        db.store
            .set_campaign_status(scope, c.id, CampaignAction::Cancel)
            .await,
        Err(CampaignError::InvalidTransition { .. })
    ));

    // Tenant caps: none by default, set, changed, removed; unknown tenant 404.
    assert_eq!(
        db.store
            .tenant_dialer_limit(t)
            .await
            .unwrap()
            .max_live_calls,
        None
    );
    let cap = db.store.set_tenant_dialer_limit(t, Some(3)).await.unwrap();
    assert_eq!(cap.max_live_calls, Some(3));
    let cap = db.store.set_tenant_dialer_limit(t, None).await.unwrap();
    assert_eq!(cap.max_live_calls, None);
    assert!(matches!(
        db.store
            .set_tenant_dialer_limit(TenantId(uuid::Uuid::new_v4()), Some(1))
            .await,
        Err(StoreError::NotFound(_))
    ));
}
