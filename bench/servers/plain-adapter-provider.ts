/**
 * The fair peer: what a team building on oidc-provider would ship. The same protocol
 * configuration as agentauth (reference-provider.ts) over a straightforward adapter, the way the
 * community adapters do it: one PostgreSQL table with a JSONB payload per model (find, upsert,
 * consume, destroy, revoke by grant; each one statement on the pool, no transaction), and Redis
 * for browser sessions and interactions. Clients are rows of the same table, found per request.
 *
 * What it does not do, and agentauth does: no transaction per request (a 200 may be answered
 * before a later write failed), no audit, no rate limits, no hashing of stored credentials; its
 * replay check is oidc-provider's find-then-save and its refresh rotation find-then-consume, so
 * two concurrent uses of one assertion or refresh token can both win (not race-safe).
 *
 *   BENCH_REFERENCE_CONFIG=<file.json> node bench/servers/plain-adapter-provider.ts
 */
import { Redis } from 'ioredis';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import pg from 'pg';
import { readReferenceConfig, serveReferenceProvider } from './reference-provider.ts';

const config = readReferenceConfig();
const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 10 });
const redis = new Redis(config.redisUrl!, { keyPrefix: config.redisKeyPrefix });

await pool.query(`CREATE TABLE IF NOT EXISTS oidc_payloads (
  id text NOT NULL,
  type text NOT NULL,
  payload jsonb NOT NULL,
  grant_id text,
  user_code text,
  uid text,
  expires_at timestamptz,
  consumed_at timestamptz,
  PRIMARY KEY (id, type)
)`);
await pool.query('CREATE INDEX IF NOT EXISTS oidc_payloads_grant_id ON oidc_payloads (grant_id)');

const REDIS_MODELS = new Set(['Session', 'Interaction']);
const expiry = (expiresIn: number | undefined) => (expiresIn ? new Date(Date.now() + expiresIn * 1000) : null);

class PlainAdapter implements Adapter {
  readonly model: string;
  constructor(model: string) {
    this.model = model;
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
    if (REDIS_MODELS.has(this.model)) {
      const ttl = Math.max(1, expiresIn);
      const multi = redis.multi().set(`${this.model}:${id}`, JSON.stringify(payload), 'EX', ttl);
      if (this.model === 'Session' && payload.uid) multi.set(`sessionUid:${payload.uid}`, id, 'EX', ttl);
      await multi.exec();
      return;
    }
    await pool.query(
      `INSERT INTO oidc_payloads (id, type, payload, grant_id, user_code, uid, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (id, type) DO UPDATE SET payload = EXCLUDED.payload, grant_id = EXCLUDED.grant_id, expires_at = EXCLUDED.expires_at`,
      [id, this.model, payload, payload.grantId ?? null, payload.userCode ?? null, payload.uid ?? null, expiry(expiresIn)],
    );
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    if (REDIS_MODELS.has(this.model)) {
      const raw = await redis.get(`${this.model}:${id}`);
      return raw ? (JSON.parse(raw) as AdapterPayload) : undefined;
    }
    const r = await pool.query<{ payload: AdapterPayload; consumed_at: Date | null; expires_at: Date | null }>(
      'SELECT payload, consumed_at, expires_at FROM oidc_payloads WHERE id = $1 AND type = $2',
      [id, this.model],
    );
    const row = r.rows[0];
    if (!row || (row.expires_at && row.expires_at.getTime() < Date.now())) return undefined;
    return row.consumed_at ? { ...row.payload, consumed: Math.floor(row.consumed_at.getTime() / 1000) } : row.payload;
  }

  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    const id = await redis.get(`sessionUid:${uid}`);
    return id ? this.find(id) : undefined;
  }

  async findByUserCode(): Promise<AdapterPayload | undefined> {
    return undefined;
  }

  async consume(id: string): Promise<void> {
    await pool.query('UPDATE oidc_payloads SET consumed_at = now() WHERE id = $1 AND type = $2', [id, this.model]);
  }

  async destroy(id: string): Promise<void> {
    if (REDIS_MODELS.has(this.model)) {
      await redis.del(`${this.model}:${id}`);
      return;
    }
    await pool.query('DELETE FROM oidc_payloads WHERE id = $1 AND type = $2', [id, this.model]);
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    await pool.query('DELETE FROM oidc_payloads WHERE grant_id = $1 AND type = $2', [grantId, this.model]);
  }
}

for (const client of config.clients) await new PlainAdapter('Client').upsert(client.client_id, client as AdapterPayload, 0);

const server = await serveReferenceProvider('plain-adapter oidc-provider', config, PlainAdapter, false);
process.on('SIGTERM', () =>
  server.close(async () => {
    await pool.end();
    redis.disconnect();
    process.exit(0);
  }),
);
