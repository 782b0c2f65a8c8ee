-- Calls placed and received through the control plane: the agent that serves them, their
-- variables, the answering-machine verdict, the last error, the API's idempotency key, and the
-- counter that numbers the control plane's CallEvents (from 2^40, after the session's 1, 2, 3 …).

ALTER TABLE calls ADD COLUMN agent TEXT NOT NULL DEFAULT '';
ALTER TABLE calls ADD COLUMN script_id TEXT;
ALTER TABLE calls ADD COLUMN variables TEXT NOT NULL DEFAULT '{}';
ALTER TABLE calls ADD COLUMN answered_by TEXT;
ALTER TABLE calls ADD COLUMN error TEXT;
ALTER TABLE calls ADD COLUMN duration_secs BIGINT;
ALTER TABLE calls ADD COLUMN idempotency_key TEXT;
ALTER TABLE calls ADD COLUMN request_hash TEXT;
ALTER TABLE calls ADD COLUMN control_seq BIGINT NOT NULL DEFAULT 0;

-- One call per key and tenant (NULL keys do not collide).
CREATE UNIQUE INDEX calls_idempotency ON calls (tenant_id, idempotency_key);
-- One call per carrier call: a replayed inbound webhook finds the call it created.
CREATE UNIQUE INDEX calls_carrier_call ON calls (carrier, carrier_sid);
-- Listing newest first.
CREATE INDEX calls_tenant_created_id ON calls (tenant_id, created_us, id);
-- A call's events in time order (the events API's order and cursor).
CREATE INDEX call_events_time ON call_events (call_id, at_us, seq);
