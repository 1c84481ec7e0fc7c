-- Refresh rotation's opening reads in one round trip (src/oauth/refresh-state.ts): the presented
-- token's grant row is locked first, then the token's own row, the lock order of every grant
-- write (src/grants/store.ts, lockGrant). One statement cannot promise the order in which it
-- takes two row locks; a function runs its statements in order. Returns no row for an unknown
-- token; `locked` is false (and nothing is locked) for a token with no grant or of another client.
CREATE FUNCTION lock_refresh_token(token_hash bytea, presenting_client text)
RETURNS TABLE (
  locked boolean,
  token_grant_id text,
  token_client_id text,
  grant_state text,
  grant_live boolean,
  grant_payload jsonb,
  token_found boolean,
  token_unexpired boolean,
  token_payload jsonb,
  token_consumed_at timestamptz,
  token_successor_hash bytea,
  token_retry_response text,
  token_retry_until timestamptz,
  client_retry_window int
)
LANGUAGE plpgsql AS $$
DECLARE
  owner_grant text;
  owner_client text;
  g record;
  t record;
BEGIN
  SELECT a.grant_id, a.client_id INTO owner_grant, owner_client
    FROM oidc_artifacts a WHERE a.model = 'RefreshToken' AND a.id_hash = token_hash;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  IF owner_grant IS NULL OR owner_client IS DISTINCT FROM presenting_client THEN
    RETURN QUERY SELECT false, owner_grant, owner_client, NULL::text, NULL::boolean, NULL::jsonb, NULL::boolean,
      NULL::boolean, NULL::jsonb, NULL::timestamptz, NULL::bytea, NULL::text, NULL::timestamptz, NULL::int;
    RETURN;
  END IF;
  SELECT gr.revoked_at, gr.payload, (gr.revoked_at IS NULL AND (gr.expires_at IS NULL OR gr.expires_at > now())) AS live
    INTO g FROM grants gr WHERE gr.id = owner_grant FOR UPDATE;
  IF NOT FOUND THEN
    RETURN QUERY SELECT true, owner_grant, owner_client, 'missing'::text, false, NULL::jsonb, NULL::boolean,
      NULL::boolean, NULL::jsonb, NULL::timestamptz, NULL::bytea, NULL::text, NULL::timestamptz, NULL::int;
    RETURN;
  END IF;
  IF g.revoked_at IS NOT NULL THEN
    RETURN QUERY SELECT true, owner_grant, owner_client, 'revoked'::text, false, NULL::jsonb, NULL::boolean,
      NULL::boolean, NULL::jsonb, NULL::timestamptz, NULL::bytea, NULL::text, NULL::timestamptz, NULL::int;
    RETURN;
  END IF;
  SELECT a.payload, a.consumed_at, a.successor_hash, a.retry_response, a.retry_until, a.expires_at > now() AS unexpired,
      c.refresh_retry_window
    INTO t
    FROM oidc_artifacts a LEFT JOIN clients c ON c.client_id = a.client_id
    WHERE a.model = 'RefreshToken' AND a.id_hash = token_hash
    FOR UPDATE OF a;
  IF NOT FOUND THEN
    -- Deleted by a revocation that committed while this waited for the grant's lock.
    RETURN QUERY SELECT true, owner_grant, owner_client, 'live'::text, g.live, g.payload, false,
      NULL::boolean, NULL::jsonb, NULL::timestamptz, NULL::bytea, NULL::text, NULL::timestamptz, NULL::int;
    RETURN;
  END IF;
  RETURN QUERY SELECT true, owner_grant, owner_client, 'live'::text, g.live, g.payload, true,
    t.unexpired, t.payload, t.consumed_at, t.successor_hash, t.retry_response, t.retry_until, t.refresh_retry_window;
END
$$;

-- A consume whose success the caller already holds (the row is locked by this transaction and was
-- read unconsumed), sent with the COMMIT: if it ever finds the row consumed, it fails the commit
-- instead of letting a second use through. A row deleted meanwhile (its grant revoked in this
-- same transaction) is dead already: nothing to consume.
CREATE FUNCTION consume_held_artifact(artifact_model text, artifact_hash bytea) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE oidc_artifacts SET consumed_at = now()
    WHERE model = artifact_model AND id_hash = artifact_hash AND consumed_at IS NULL;
  IF NOT FOUND AND EXISTS (SELECT 1 FROM oidc_artifacts WHERE model = artifact_model AND id_hash = artifact_hash) THEN
    RAISE EXCEPTION 'artifact % already consumed', artifact_model USING ERRCODE = '40001';
  END IF;
END
$$;
