-- The audit trail: who did what, through which agent, when.
--
-- Events are inserted by the request that caused them, in its own transaction: a committed
-- change always has its rows, a rolled-back one never does. Rows are never changed afterwards.
-- Tamper evidence comes from seals: a sealer regularly takes the committed rows not yet sealed
-- and appends one audit_seals row holding their ids and content digests, chained to the previous
-- seal by an HMAC keyed from the key-encryption key (which never sits in the database).
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
  details     jsonb NOT NULL DEFAULT '{}'
);
-- Few, partial indexes: every one is written on the token endpoint's path.
CREATE INDEX audit_events_account_idx ON audit_events (account_id, id) WHERE account_id IS NOT NULL;
CREATE INDEX audit_events_client_idx ON audit_events (client_id, id) WHERE client_id IS NOT NULL;
CREATE INDEX audit_events_time_idx ON audit_events USING brin (occurred_at);

CREATE TABLE audit_seals (
  seq         bigint PRIMARY KEY,   -- gapless
  after_id    bigint NOT NULL,      -- the seal covers the events with after_id < id <= last_id
  last_id     bigint NOT NULL,
  row_ids     bigint[] NOT NULL,    -- the ids that exist in that range (rolled-back ones leave gaps)
  row_digests text[] NOT NULL,      -- SHA-256 of each row's content, in id order
  sealed_at   timestamptz NOT NULL,
  prev_hash   text NOT NULL,
  hash        text NOT NULL
);

-- Where the chain starts: after a purge, the last purged seal.
CREATE TABLE audit_chain_anchor (
  id      int PRIMARY KEY CHECK (id = 1),
  seq     bigint NOT NULL,
  last_id bigint NOT NULL,
  hash    text NOT NULL
);
INSERT INTO audit_chain_anchor (id, seq, last_id, hash) VALUES (1, 0, 0, repeat('0', 64));

-- Nothing is ever updated; rows are deleted only by a purge, which sets agentauth.audit_purge for
-- its own transaction and moves the anchor. The seals, not this trigger, are the tamper evidence.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('agentauth.audit_purge', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_seals_append_only BEFORE UPDATE OR DELETE ON audit_seals
  FOR EACH ROW EXECUTE FUNCTION audit_append_only();
