-- The control plane's tables. Portable SQL: it runs unchanged on SQLite and PostgreSQL.
-- Ids are UUID text, times are microseconds since the Unix epoch (BIGINT), JSON is TEXT.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    plan        TEXT NOT NULL CHECK (plan IN ('OUTBOUND', 'INBOUND', 'FULL')),
    created_us  BIGINT NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT REFERENCES tenants (id),
    email       TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('AGENT', 'ADMIN', 'SUPERADMIN')),
    created_us  BIGINT NOT NULL,
    CHECK ((role = 'SUPERADMIN') = (tenant_id IS NULL))
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT REFERENCES tenants (id),
    role        TEXT NOT NULL CHECK (role IN ('AGENT', 'ADMIN', 'SUPERADMIN')),
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    created_us  BIGINT NOT NULL,
    revoked_us  BIGINT,
    CHECK ((role = 'SUPERADMIN') = (tenant_id IS NULL))
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE phone_numbers (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    e164        TEXT NOT NULL UNIQUE,
    carrier     TEXT NOT NULL CHECK (carrier IN ('twilio', 'exotel')),
    created_us  BIGINT NOT NULL
);
CREATE INDEX phone_numbers_tenant ON phone_numbers (tenant_id);

CREATE TABLE scripts (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_us  BIGINT NOT NULL,
    UNIQUE (tenant_id, name, version)
);

CREATE TABLE contacts (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    phone       TEXT NOT NULL,
    variables   TEXT NOT NULL,
    created_us  BIGINT NOT NULL,
    UNIQUE (tenant_id, phone)
);

CREATE TABLE calls (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    direction      TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    status         TEXT NOT NULL CHECK (status IN ('queued', 'ringing', 'in_progress', 'completed',
                                                   'failed', 'busy', 'no_answer', 'canceled')),
    from_number    TEXT NOT NULL,
    to_number      TEXT NOT NULL,
    carrier        TEXT NOT NULL CHECK (carrier IN ('twilio', 'exotel')),
    carrier_sid    TEXT,
    outcome        TEXT,
    recording_url  TEXT,
    created_us     BIGINT NOT NULL,
    updated_us     BIGINT NOT NULL,
    answered_us    BIGINT,
    ended_us       BIGINT
);
CREATE INDEX calls_tenant_created ON calls (tenant_id, created_us);
CREATE INDEX calls_carrier_sid ON calls (carrier_sid);

-- Append-only: the gateway has no UPDATE or DELETE for this table. No foreign key to calls, so
-- the event writer never fails on the order in which a call and its events arrive.
CREATE TABLE call_events (
    call_id  TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    at_us    BIGINT NOT NULL,
    type     TEXT NOT NULL,
    data     TEXT NOT NULL,
    PRIMARY KEY (call_id, seq)
);
