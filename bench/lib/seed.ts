/**
 * Stored data for the "cost grows with data" runs: grants and tokens written straight into the
 * bench deployment's own database (a fresh one per run, see newDeployment), shaped like the rows
 * oidc-provider writes, live for the whole run. Nobody presents them; they are there to make the
 * tables and their indexes the size of a busy deployment's.
 */
import pg from 'pg';

export async function seedStoredData(databaseUrl: string, tokens: number, grants: number): Promise<number> {
  const started = performance.now();
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query(
      `INSERT INTO grants (id, account_id, client_id, payload, expires_at)
       SELECT 'seed-grant-' || g, 'seed-account-' || (g % 10000), 'seed-client-' || (g % 1000),
              jsonb_build_object('kind', 'Grant', 'accountId', 'seed-account-' || (g % 10000), 'clientId', 'seed-client-' || (g % 1000),
                                 'iat', extract(epoch FROM now())::int, 'exp', extract(epoch FROM now() + interval '90 days')::int,
                                 'openid', jsonb_build_object('scope', 'bench:read')),
              now() + interval '90 days'
       FROM generate_series(1, $1::int) AS g`,
      [grants],
    );
    // Four kinds in turn; client credentials belong to no grant. Hashes are SHA-256 like real keys.
    await client.query(
      `INSERT INTO oidc_artifacts (model, id_hash, grant_id, client_id, payload, expires_at)
       SELECT (ARRAY['AccessToken', 'RefreshToken', 'AuthorizationCode', 'ClientCredentials'])[1 + i % 4],
              sha256(convert_to('seed-token-' || i, 'UTF8')),
              CASE WHEN i % 4 = 3 THEN NULL ELSE 'seed-grant-' || (1 + i % $2::int) END,
              'seed-client-' || (i % 1000),
              jsonb_build_object('kind', (ARRAY['AccessToken', 'RefreshToken', 'AuthorizationCode', 'ClientCredentials'])[1 + i % 4],
                                 'iat', extract(epoch FROM now())::int, 'exp', extract(epoch FROM now() + interval '1 day')::int,
                                 'accountId', 'seed-account-' || (i % 10000), 'clientId', 'seed-client-' || (i % 1000),
                                 'grantId', 'seed-grant-' || (1 + i % $2::int), 'scope', 'bench:read', 'gty', 'authorization_code',
                                 'sessionUid', md5(i::text), 'expiresWithSession', false),
              now() + interval '1 day'
       FROM generate_series(1, $1::int) AS i`,
      [tokens, grants],
    );
    await client.query('ANALYZE grants');
    await client.query('ANALYZE oidc_artifacts');
  } finally {
    await client.end();
  }
  return Math.round((performance.now() - started) / 100) / 10;
}
