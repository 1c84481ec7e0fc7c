-- Issue 19: rich authorization requests (RFC 9396) and human approval (CIBA).

-- Authorization details types the product team registered: the JSON Schema a detail's fields
-- must satisfy, the sentence the user reads ("Pay {amount} {currency} to {creditor}"), the
-- resource server the detail is for (the token's audience), and whether one approval is good
-- for one transaction only (a short-lived token, no refresh token).
CREATE TABLE authorization_details_types (
  name        text PRIMARY KEY,
  schema      jsonb NOT NULL,
  template    text NOT NULL,
  resource    text,
  one_time    boolean NOT NULL DEFAULT false,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- CIBA requests waiting for their user. oidc-provider keeps the request itself (oidc_artifacts,
-- keyed by the hash of auth_req_id); this row is what the user's /account page lists and acts on.
-- The auth_req_id is kept sealed under the key-encryption key: approving needs its value, and a
-- dump of the database must not yield it.
CREATE TABLE approval_requests (
  id                  text PRIMARY KEY,          -- random, shown in the user's page forms
  auth_req_id_sealed  text NOT NULL,
  account_id          text NOT NULL,
  client_id           text NOT NULL,
  binding_message     text,
  scope               text NOT NULL,
  authorization_details jsonb,
  created_at          timestamptz NOT NULL DEFAULT now(),
  expires_at          timestamptz NOT NULL,
  decided_at          timestamptz,
  decision            text CHECK (decision IN ('approved', 'denied'))
);
CREATE INDEX approval_requests_waiting_idx ON approval_requests (account_id, expires_at) WHERE decided_at IS NULL;

-- The revocation outbox also carries CIBA pings to agents and approval webhooks to the product:
-- the same lease, retries and backoff. `payload` holds what such a message needs (sealed where
-- it is a secret).
ALTER TABLE revocation_events DROP CONSTRAINT revocation_events_kind_check;
ALTER TABLE revocation_events ADD CONSTRAINT revocation_events_kind_check
  CHECK (kind IN ('set', 'backchannel_logout', 'ciba_ping', 'approval_webhook'));
ALTER TABLE revocation_events ADD COLUMN payload jsonb;
-- A ping for a denied request, or a webhook for a new one, belongs to no grant.
ALTER TABLE revocation_events ALTER COLUMN grant_id DROP NOT NULL;
