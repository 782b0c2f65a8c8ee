-- The outbound dialer: campaigns, and the durable job queue their contacts become.
--
-- A job is one contact of one campaign. Its life (every step in one transaction):
--   pending  --claim-->  claimed  --start attempt-->  dialing  --call final-->  pending (retry, due later)
--                                                                          \->  done (final_reason)
--   pending/claimed --campaign canceled--> canceled
-- `claimed` and `dialing` hold a lease (lease_owner, lease_until_us): a worker that dies leaves
-- it to expire, and another takes the job over. Each attempt is its own row in `calls`
-- (calls.job_id, calls.attempt). Live-call caps are exact: campaigns.live_calls and
-- dialer_tenants.live_calls move in the same transaction as the job that takes or frees a slot.

CREATE TABLE campaigns (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    name                TEXT NOT NULL,
    status              TEXT NOT NULL
        CHECK (status IN ('draft', 'running', 'paused', 'canceled', 'completed')),
    -- What answered calls run: `script:<name>`-style agent and the tenant script version.
    agent               TEXT NOT NULL,
    script_id           TEXT,
    -- JSON array of the tenant's numbers (E.164) calls are placed from, used in turn.
    caller_ids          TEXT NOT NULL,
    carrier             TEXT NOT NULL CHECK (carrier IN ('twilio', 'exotel')),
    -- The contacts' calling hours (JSON, dialer::window::CallingWindowConfig); a contact's own
    -- time zone overrides the one inside.
    calling_window      TEXT NOT NULL,
    -- JSON, dialer::retry::RetryPolicyConfig.
    retry_policy        TEXT NOT NULL,
    max_concurrency     BIGINT NOT NULL CHECK (max_concurrency > 0),
    live_calls          BIGINT NOT NULL DEFAULT 0 CHECK (live_calls >= 0),
    -- Dialing starts no earlier / stops at (µs); NULL: no bound.
    starts_at_us        BIGINT,
    ends_at_us          BIGINT,
    -- Call settings: AMD (`enable` | `detect_message_end` | NULL), ring time, call length,
    -- recording.
    machine_detection   TEXT,
    timeout_secs        BIGINT,
    time_limit_secs     BIGINT,
    record              BOOLEAN NOT NULL DEFAULT FALSE,
    -- Spoken after the beep when a machine answers (template); NULL: hang up on machines.
    voicemail_message   TEXT,
    -- Texted to a contact whose last attempt ended without an answer (template); NULL: none.
    sms_fallback        TEXT,
    -- Shared by every job of the campaign (JSON object), under each contact's own.
    variables           TEXT NOT NULL DEFAULT '{}',
    contacts            BIGINT NOT NULL DEFAULT 0,
    created_us          BIGINT NOT NULL,
    updated_us          BIGINT NOT NULL
);
CREATE INDEX campaigns_tenant_created ON campaigns (tenant_id, created_us, id);
CREATE INDEX campaigns_status ON campaigns (status);

CREATE TABLE dial_jobs (
    id                  TEXT PRIMARY KEY,
    campaign_id         TEXT NOT NULL REFERENCES campaigns (id),
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    -- The contact's position in the campaign (0-based, in upload order).
    position            BIGINT NOT NULL,
    phone               TEXT NOT NULL,
    variables           TEXT NOT NULL DEFAULT '{}',
    -- IANA zone overriding the campaign's (NULL: the campaign's).
    timezone            TEXT,
    state               TEXT NOT NULL
        CHECK (state IN ('pending', 'claimed', 'dialing', 'done', 'canceled')),
    -- A pending job may be claimed from this time on (µs).
    due_us              BIGINT NOT NULL,
    attempts            BIGINT NOT NULL DEFAULT 0,
    lease_owner         TEXT,
    lease_until_us      BIGINT,
    -- The attempt in flight or the last one.
    call_id             TEXT,
    last_outcome        TEXT,
    -- Why a `done` job stopped (`completed`, `max_attempts`, `not_retried`, `no_window`,
    -- `campaign_ended`, …).
    final_reason        TEXT,
    -- SMS fallback: NULL (none due) | `due` | `sending` | `sent` | `failed` | `unknown`.
    sms_state           TEXT,
    sms_sid             TEXT,
    created_us          BIGINT NOT NULL,
    updated_us          BIGINT NOT NULL,
    UNIQUE (campaign_id, position)
);
-- The claim: pending jobs by due time.
CREATE INDEX dial_jobs_due ON dial_jobs (state, due_us);
CREATE INDEX dial_jobs_campaign_state ON dial_jobs (campaign_id, state);
CREATE INDEX dial_jobs_lease ON dial_jobs (state, lease_until_us);
CREATE INDEX dial_jobs_sms ON dial_jobs (sms_state);

-- Per-tenant dialer limits: at most max_live_calls campaign calls live at once (NULL: no cap).
CREATE TABLE dialer_tenants (
    tenant_id           TEXT PRIMARY KEY REFERENCES tenants (id),
    max_live_calls      BIGINT,
    live_calls          BIGINT NOT NULL DEFAULT 0 CHECK (live_calls >= 0)
);

-- Attempts: every dial of a job is its own call, numbered from 1.
ALTER TABLE calls ADD COLUMN job_id TEXT;
ALTER TABLE calls ADD COLUMN attempt BIGINT;
CREATE INDEX calls_job ON calls (job_id, attempt);
