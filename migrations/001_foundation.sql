-- Accounts: end users who sign in and grant agents access.
CREATE TABLE accounts (
  id            text PRIMARY KEY,
  username      text NOT NULL UNIQUE,
  password_hash text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  disabled_at   timestamptz
);

-- Scopes a client may request; the description is what the user is shown on the consent page.
CREATE TABLE scopes (
  name        text PRIMARY KEY,
  description text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- Registered clients (agents). metadata is the oidc-provider client metadata.
CREATE TABLE clients (
  client_id   text PRIMARY KEY,
  metadata    jsonb NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  disabled_at timestamptz
);

-- Grants: what a user allowed an agent. revoked_at is a tombstone kept until every token of
-- the grant has expired, so no token minted concurrently with a revocation can be stored.
CREATE TABLE grants (
  id          text PRIMARY KEY,
  account_id  text NOT NULL,
  client_id   text NOT NULL,
  payload     jsonb NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz,
  revoked_at  timestamptz
);
CREATE INDEX grants_account_idx ON grants (account_id);
CREATE INDEX grants_client_idx ON grants (client_id);

-- Every credential oidc-provider issues (codes, access and refresh tokens, client credentials,
-- pushed requests), keyed by the SHA-256 of its value: a dump yields no usable token.
CREATE TABLE oidc_artifacts (
  model       text NOT NULL,
  id_hash     bytea NOT NULL,
  grant_id    text,
  client_id   text,                 -- so a disabled or deleted client's tokens die with it
  payload     jsonb NOT NULL,
  expires_at  timestamptz NOT NULL,
  consumed_at timestamptz,
  PRIMARY KEY (model, id_hash)
);
CREATE INDEX oidc_artifacts_grant_idx ON oidc_artifacts (grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX oidc_artifacts_client_idx ON oidc_artifacts (client_id) WHERE client_id IS NOT NULL;
CREATE INDEX oidc_artifacts_expiry_idx ON oidc_artifacts (expires_at);

-- Single-use markers (client assertion jti): kept in Postgres so losing Redis reopens no replay.
CREATE TABLE replay_detection (
  id_hash    bytea PRIMARY KEY,
  expires_at timestamptz NOT NULL
);
CREATE INDEX replay_detection_expiry_idx ON replay_detection (expires_at);

-- Signing keys, private parts encrypted with the key-encryption key. Newest signs.
CREATE TABLE signing_keys (
  kid             text PRIMARY KEY,
  alg             text NOT NULL,
  public_jwk      jsonb NOT NULL,
  private_jwk_enc text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Bumped whenever keys or scopes change, so every instance reloads without a restart.
CREATE TABLE config_generation (
  id         int PRIMARY KEY CHECK (id = 1),
  generation bigint NOT NULL
);
INSERT INTO config_generation (id, generation) VALUES (1, 1);
