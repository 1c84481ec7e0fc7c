-- Delegation (RFC 8693 token exchange). Who may act for a client's users is an operator's
-- decision: each row lets `delegate_id` exchange tokens issued to `client_id`.
CREATE TABLE client_delegates (
  client_id   text NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
  delegate_id text NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (client_id, delegate_id)
);
CREATE INDEX client_delegates_delegate_idx ON client_delegates (delegate_id);

-- A grant made by token exchange is the child of the grant its subject token belongs to: one per
-- (parent, acting client), so the chain is the path from a root grant (a user's consent to the
-- first agent) down to it. Revoking a grant tombstones its descendants with it; a revoked child
-- stays a tombstone, so the same client cannot be handed that parent's tokens again.
ALTER TABLE grants ADD COLUMN parent_grant_id text;
CREATE UNIQUE INDEX grants_parent_client_idx ON grants (parent_grant_id, client_id) WHERE parent_grant_id IS NOT NULL;

-- `audit export --client X` finds rows where X is any link of the chain they name.
CREATE INDEX audit_events_chain_idx ON audit_events USING gin ((details -> 'chain')) WHERE details ? 'chain';
