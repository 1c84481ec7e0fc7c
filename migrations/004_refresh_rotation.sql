-- Refresh token rotation with a retry rule. When a refresh token is rotated, its row keeps the
-- hash of its successor and, until retry_until, the successor response encrypted under a key
-- derived from the rotated token's own value: only its holder can read it back, and only then.
ALTER TABLE oidc_artifacts
  ADD COLUMN successor_hash bytea,
  ADD COLUMN retry_response text,
  ADD COLUMN retry_until timestamptz;

-- Seconds within which a client may present its previous refresh token again and get the same
-- successor; NULL takes REFRESH_RETRY_WINDOW, 0 is strict.
ALTER TABLE clients ADD COLUMN refresh_retry_window int CHECK (refresh_retry_window IS NULL OR refresh_retry_window BETWEEN 0 AND 300);
