-- Revocation events waiting to be pushed (transactional outbox): written in the transaction that
-- revokes the grant, one row per subscriber, delivered by a worker with retries and backoff.
-- jti is stable across retries, so receivers drop duplicates.
CREATE TABLE revocation_events (
  jti             text PRIMARY KEY,
  -- 'set': a Security Event Token to the agent's event_delivery_uri (RFC 8935);
  -- 'backchannel_logout': an OIDC back-channel logout token to its backchannel_logout_uri.
  kind            text NOT NULL DEFAULT 'set' CHECK (kind IN ('set', 'backchannel_logout')),
  grant_id        text NOT NULL,
  client_id       text NOT NULL,
  account_id      text NOT NULL,
  subscriber_uri  text NOT NULL,
  audience        text NOT NULL,       -- the SET's aud: the agent's client_id, or a resource server
  reason          text NOT NULL,
  revoked_at      timestamptz NOT NULL DEFAULT now(),
  attempts        int NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  delivered_at    timestamptz,
  last_error      text
);
CREATE INDEX revocation_events_due_idx ON revocation_events (next_attempt_at) WHERE delivered_at IS NULL;
