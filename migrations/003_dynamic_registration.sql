-- RFC 7591 dynamic registration: how each client came to be, and the initial access tokens that
-- gate registration (stored as SHA-256, counted down atomically).
ALTER TABLE clients ADD COLUMN registration text NOT NULL DEFAULT 'admin'
  CHECK (registration IN ('admin', 'token', 'open'));

CREATE TABLE registration_tokens (
  id_hash    bytea PRIMARY KEY,
  expires_at timestamptz NOT NULL,
  uses_left  int CHECK (uses_left IS NULL OR uses_left > 0),   -- NULL: any number until expiry
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Token endpoint requests a client may make per minute; NULL takes TOKEN_RATE_LIMIT.
ALTER TABLE clients ADD COLUMN token_rate_limit int CHECK (token_rate_limit IS NULL OR token_rate_limit > 0);
