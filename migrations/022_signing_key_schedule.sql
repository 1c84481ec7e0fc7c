-- Key rotation on a schedule: a new key is published at once but signs only from signs_from (so
-- verifiers with a cached key set learn it first), and a replaced key is unpublished at
-- retire_at (once every token it signed has expired).
ALTER TABLE signing_keys ADD COLUMN signs_from timestamptz;
UPDATE signing_keys SET signs_from = created_at;
ALTER TABLE signing_keys ALTER COLUMN signs_from SET NOT NULL;
ALTER TABLE signing_keys ALTER COLUMN signs_from SET DEFAULT clock_timestamp();
ALTER TABLE signing_keys ADD COLUMN retire_at timestamptz;
