-- Connected accounts (docs/connected-accounts.md): upstream OAuth providers a product team
-- registers, and the tokens users obtain from them. Secrets and tokens are sealed (AES-256-GCM
-- under KEY_ENCRYPTION_KEY) with associated data naming their row, so a sealed value copied to
-- another row does not open.
CREATE TABLE connections (
  id                     text PRIMARY KEY,
  display_name           text NOT NULL,
  issuer                 text,
  authorization_endpoint text NOT NULL,
  token_endpoint         text NOT NULL,
  revocation_endpoint    text,
  -- RFC 9207: when the provider says it sends iss, a response without it is refused.
  iss_parameter_supported boolean NOT NULL DEFAULT false,
  client_id              text NOT NULL,
  client_secret_sealed   text NOT NULL,
  scopes                 text NOT NULL,
  agents                 text[] NOT NULL DEFAULT '{}',
  created_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE connected_accounts (
  account_id        text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  connection_id     text NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
  tokens_sealed     text NOT NULL,
  scopes            text NOT NULL,
  access_expires_at timestamptz,
  -- 'broken' when the provider refused the refresh token (invalid_grant): the user reconnects.
  status            text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'broken')),
  connected_at      timestamptz NOT NULL DEFAULT now(),
  refreshed_at      timestamptz,
  last_used_at      timestamptz,
  last_used_by      text,
  PRIMARY KEY (account_id, connection_id)
);
