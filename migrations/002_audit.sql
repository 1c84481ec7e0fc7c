-- The audit trail: who did what, through which agent, when. Append-only and hash-chained:
-- each row's hash covers its content and the previous row's hash, so a changed or deleted row
-- breaks the chain at that row (`agentauth audit verify`).
CREATE TABLE audit_events (
  seq         bigint PRIMARY KEY,          -- gapless: assigned under the chain lock
  occurred_at timestamptz NOT NULL,
  event_type  text NOT NULL,
  actor_type  text NOT NULL CHECK (actor_type IN ('user', 'admin', 'client', 'system')),
  actor_id    text,
  client_id   text,
  account_id  text,
  grant_id    text,
  scopes      text,
  resource    text,
  ip          text,
  user_agent  text,
  request_id  text,
  outcome     text NOT NULL CHECK (outcome IN ('success', 'failure')),
  details     jsonb NOT NULL DEFAULT '{}',
  prev_hash   text NOT NULL,
  hash        text NOT NULL
);
CREATE INDEX audit_events_account_idx ON audit_events (account_id, seq);
CREATE INDEX audit_events_client_idx ON audit_events (client_id, seq);
CREATE INDEX audit_events_time_idx ON audit_events (occurred_at);

-- Where the chain starts: after a purge, the last purged row's seq and hash.
CREATE TABLE audit_chain_anchor (
  id   int PRIMARY KEY CHECK (id = 1),
  seq  bigint NOT NULL,
  hash text NOT NULL
);
INSERT INTO audit_chain_anchor (id, seq, hash) VALUES (1, 0, repeat('0', 64));

-- Rows are never changed, and deleted only by a purge (which sets agentauth.audit_purge for its
-- own transaction and moves the anchor). The chain, not this trigger, is the tamper evidence.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('agentauth.audit_purge', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
