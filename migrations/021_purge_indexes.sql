-- Indexes the batched purges find their rows by (src/maintenance/purge.ts): without them each
-- batch would scan the whole table.
CREATE INDEX grants_revoked_idx ON grants (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX grants_expiry_idx ON grants (expires_at) WHERE revoked_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX revocation_events_delivered_idx ON revocation_events (delivered_at) WHERE delivered_at IS NOT NULL;
CREATE INDEX registration_tokens_expiry_idx ON registration_tokens (expires_at);
