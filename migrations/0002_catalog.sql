-- The script an inbound call to a number runs (the latest version of this tenant script name);
-- NULL: the tenant's default. Portable SQL (SQLite and PostgreSQL).
ALTER TABLE phone_numbers ADD COLUMN script TEXT;

-- Lists page through a tenant's scripts by name and through a name's versions.
CREATE INDEX scripts_tenant_name ON scripts (tenant_id, name, version);
