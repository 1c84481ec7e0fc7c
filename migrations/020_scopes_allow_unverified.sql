-- Whether clients nobody vetted (open registration, metadata documents) may request a scope.
-- No by default: a look-alike agent registers in one request and needs only one click.
ALTER TABLE scopes ADD COLUMN allow_unverified boolean NOT NULL DEFAULT false;
