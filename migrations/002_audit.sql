-- The audit trail: who did what, through which agent, when. Append-only and hash-chained.
--
-- A request inserts its events in its own transaction (so a rolled-back change leaves none),
-- without touching the chain: the chain is extended afterwards by a sealer that takes the
-- committed, unsealed rows in id order and gives each its seq, prev_hash and hash (an HMAC over
-- its content and the previous row's hash). Requests therefore never queue behind one lock.
CREATE TABLE audit_events (
  id          bigserial PRIMARY KEY,
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
  seq         bigint,          -- position in the chain: gapless, assigned by the sealer
  prev_hash   text,
  hash        text,
  CHECK ((seq IS NULL) = (hash IS NULL) AND (seq IS NULL) = (prev_hash IS NULL))
);
-- Indexes are kept few and partial: every one is written on the token endpoint's path.
CREATE UNIQUE INDEX audit_events_seq_idx ON audit_events (seq) WHERE seq IS NOT NULL;
CREATE INDEX audit_events_unsealed_idx ON audit_events (id) WHERE seq IS NULL;
CREATE INDEX audit_events_account_idx ON audit_events (account_id, id) WHERE account_id IS NOT NULL;
CREATE INDEX audit_events_client_idx ON audit_events (client_id, id) WHERE client_id IS NOT NULL;
CREATE INDEX audit_events_time_idx ON audit_events USING brin (occurred_at);

-- Where the chain starts: after a purge, the last purged row's seq and hash.
CREATE TABLE audit_chain_anchor (
  id   int PRIMARY KEY CHECK (id = 1),
  seq  bigint NOT NULL,
  hash text NOT NULL
);
INSERT INTO audit_chain_anchor (id, seq, hash) VALUES (1, 0, repeat('0', 64));

-- Rows are never changed, except once by the sealer (chain columns only, from empty), and are
-- deleted only by a purge (which sets agentauth.audit_purge for its own transaction and moves
-- the anchor). The chain, not this trigger, is the tamper evidence.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('agentauth.audit_purge', true) = 'on' THEN
    RETURN OLD;
  END IF;
  IF TG_OP = 'UPDATE' AND OLD.seq IS NULL
     AND (to_jsonb(NEW) - 'seq' - 'prev_hash' - 'hash') = (to_jsonb(OLD) - 'seq' - 'prev_hash' - 'hash') THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
