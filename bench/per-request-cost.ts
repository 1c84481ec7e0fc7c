/**
 * What one token request writes, measured: per request of each kind, the PostgreSQL row writes
 * and WAL bytes of the server's own database, and its Redis commands, for agentauth and the
 * plain-adapter peer (docs/performance.md, "Capacity").
 *
 *   node bench/per-request-cost.ts [--requests 400] [--concurrency 8] [--targets agentauth,peer]
 *
 * WAL: pg_walinspect's records between two pg_current_wal_lsn() readings, kept when they touch a
 * relation of the server's database or commit a transaction that did (other databases on the
 * same PostgreSQL are left out). Writes: those records by kind (heap insert, update, delete,
 * row lock; index inserts counted apart). Redis: MONITOR lines under the server's key prefix,
 * commands a script runs inside Redis left out.
 * After the requests it waits for the server's background work they caused (the audit
 * sealer) before the second reading.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '400' },
    concurrency: { type: 'string', default: '8' },
    targets: { type: 'string', default: 'agentauth,peer' },
    settle: { type: 'string', default: '3' },
  },
});
process.env.DATABASE_URL ??= 'postgres://postgres@127.0.0.1:5432/test';
process.env.REDIS_URL ??= 'redis://127.0.0.1:6379';

const { Redis } = await import('ioredis');
const pg = (await import('pg')).default;
const { startAgentauth, startPeerProvider } = await import('./lib/targets.ts');
const { mapConcurrently } = await import('./lib/load.ts');
const oauth = await import('./lib/oauth.ts');
type Target = import('./lib/targets.ts').Target;

const N = Number(values.requests);
const concurrency = Number(values.concurrency);
const log = (line: string) => process.stderr.write(`${line}\n`);

interface Counts {
  walBytes: number;
  records: Record<string, number>;
  commits: number;
  redis: Record<string, number>;
  /** Growth of each table (with its indexes and TOAST), bytes: coarse (whole pages). */
  grown: Record<string, number>;
}

async function measureWindow(target: Target, run: () => Promise<void>): Promise<Counts> {
  const storage = target.storage!;
  const db = new pg.Client({ connectionString: storage.databaseUrl });
  await db.connect();
  await db.query('CREATE EXTENSION IF NOT EXISTS pg_walinspect');
  const oid = (await db.query<{ oid: string }>('SELECT oid::text FROM pg_database WHERE datname = current_database()')).rows[0]!.oid;
  const monitor = new Redis(process.env.REDIS_URL!, { lazyConnect: true });
  const redis: Record<string, number> = {};
  const prefix = storage.redisKeyPrefix;
  const m = await monitor.monitor();
  m.on('monitor', (_time: string, args: string[], source: string) => {
    // Commands a script runs inside Redis are listed too (source "lua"): not round trips.
    if (source === 'lua' || !args.slice(1).some((a) => a.startsWith(prefix))) return;
    const name = args[0]!.toUpperCase();
    redis[name] = (redis[name] ?? 0) + 1;
  });
  await sleep(200);
  const sizes = async () =>
    Object.fromEntries(
      (
        await db.query<{ name: string; bytes: string }>(
          "SELECT relname AS name, pg_total_relation_size(relid)::text AS bytes FROM pg_stat_user_tables WHERE schemaname = 'public'",
        )
      ).rows.map((r) => [r.name, Number(r.bytes)]),
    );
  const sizesBefore = await sizes();
  const start = (await db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
  await run();
  await sleep(Number(values.settle) * 1000);
  const end = (await db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
  const sizesAfter = await sizes();
  const grown: Record<string, number> = {};
  for (const [name, bytes] of Object.entries(sizesAfter)) if (bytes !== sizesBefore[name]) grown[name] = bytes - (sizesBefore[name] ?? 0);
  m.disconnect();
  // Records touching this database's relations; then the commits of their transactions.
  const r = await db.query<{ kind: string; n: string; bytes: string }>(
    `WITH w AS (SELECT * FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)),
          ours AS (SELECT DISTINCT xid FROM w WHERE block_ref LIKE $3 AND xid <> '0'::xid),
          kept AS (SELECT * FROM w WHERE block_ref LIKE $3 OR (resource_manager = 'Transaction' AND xid IN (SELECT xid FROM ours)))
     SELECT resource_manager || '/' || split_part(record_type, ' ', 1) AS kind, count(*)::text AS n, sum(record_length)::text AS bytes FROM kept GROUP BY 1`,
    [start, end, `%/${oid}/%`],
  );
  await db.end();
  const records: Record<string, number> = {};
  let walBytes = 0;
  let commits = 0;
  for (const row of r.rows) {
    records[row.kind] = Number(row.n);
    walBytes += Number(row.bytes);
    if (row.kind === 'Transaction/COMMIT') commits = Number(row.n);
  }
  return { walBytes, records, commits, redis, grown };
}

const perRequest = (n: number) => Math.round((n / N) * 100) / 100;

async function kinds(target: Target) {
  const fx = target.fixture!;
  const send = async (body: string, path = '/token') => {
    const res = await oauth.post(`${fx.issuer}${path}`, body);
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
  };
  const cc = (resource: string) => async () => {
    const assertions = oauth.assertionSource(fx, fx.ccClient, N);
    await mapConcurrently(Array.from({ length: N }), concurrency, () =>
      send(oauth.form({ grant_type: 'client_credentials', scope: oauth.SCOPE, resource, ...oauth.clientAuth(fx.ccClient, assertions()) })),
    );
  };
  const tokens = await oauth.prepareRefreshTokens(fx, N, 4, 8);
  const opaque = await Promise.all(Array.from({ length: 50 }, () => oauth.clientCredentialsToken(fx, fx.resources.opaque)));
  const introspectionAssertions = oauth.assertionSource(fx, fx.introspector, N);
  return {
    'cc-opaque': cc(fx.resources.opaque),
    'cc-jwt': cc(fx.resources.jwt),
    refresh: async () => {
      await mapConcurrently(tokens, concurrency, (t) =>
        send(
          oauth.form({
            grant_type: 'refresh_token',
            refresh_token: t.refreshToken,
            ...oauth.clientAuth(t.clientId, oauth.assertionSource(fx, t.clientId, 1)()),
          }),
        ),
      );
    },
    introspection: async () => {
      await mapConcurrently(Array.from({ length: N }), concurrency, (_, i) =>
        send(
          oauth.form({ token: opaque[i % opaque.length]!, token_type_hint: 'access_token', ...oauth.clientAuth(fx.introspector, introspectionAssertions()) }),
          '/token/introspection',
        ),
      );
    },
  };
}

const results: Record<string, Record<string, Counts>> = {};
const options = { serverCores: '', flowClients: 2 };
for (const [name, start] of [
  ['agentauth', startAgentauth],
  ['peer', startPeerProvider],
] as const) {
  if (!values.targets.split(',').includes(name)) continue;
  log(`starting ${name}`);
  const target = await start(options);
  try {
    results[name] = {};
    for (const [kind, run] of Object.entries(await kinds(target))) {
      await sleep(Number(values.settle) * 1000); // what preparing the data left to do
      log(`  ${kind}: ${N} requests`);
      results[name][kind] = await measureWindow(target, run);
    }
  } finally {
    await target.stop();
  }
}

const out: string[] = [
  `Per request, ${N} requests at ${concurrency} at once (WAL and writes of the server's own database; Redis commands under its prefix).`,
  '',
  '| server | request | WAL bytes | commits | heap inserts | heap updates | heap deletes | row locks | index inserts | Redis commands |',
  '|---|---|---|---|---|---|---|---|---|---|',
];
for (const [name, byKind] of Object.entries(results)) {
  for (const [kind, c] of Object.entries(byKind)) {
    const sum = (...keys: string[]) => perRequest(keys.reduce((n, k) => n + (c.records[k] ?? 0), 0));
    const redisTotal = Object.values(c.redis).reduce((a, b) => a + b, 0);
    const redisDetail = Object.entries(c.redis)
      .map(([k, v]) => `${k} ${perRequest(v)}`)
      .join(', ');
    out.push(
      `| ${name} | ${kind} | ${perRequest(c.walBytes)} | ${perRequest(c.commits)} | ${sum('Heap/INSERT', 'Heap/INSERT+INIT')} | ${sum('Heap/UPDATE', 'Heap/HOT_UPDATE', 'Heap/UPDATE+INIT', 'Heap/HOT_UPDATE+INIT')} | ${sum('Heap/DELETE')} | ${sum('Heap/LOCK')} | ${sum('Btree/INSERT_LEAF', 'Btree/INSERT_UPPER', 'Btree/SPLIT_L', 'Btree/SPLIT_R')} | ${perRequest(redisTotal)}${redisDetail ? ` (${redisDetail})` : ''} |`,
    );
  }
}
out.push('', 'Table growth per request (bytes with indexes, whole 8 KiB pages, so coarse):', '');
for (const [name, byKind] of Object.entries(results))
  for (const [kind, c] of Object.entries(byKind))
    out.push(
      `- ${name} / ${kind}: ${Object.entries(c.grown)
        .map(([t, b]) => `${t} ${Math.round(b / N)}`)
        .join(', ')}`,
    );
process.stdout.write(
  `${out.join('\n')}\n\nAll WAL record kinds: ${JSON.stringify(Object.fromEntries(Object.entries(results).map(([n, k]) => [n, Object.fromEntries(Object.entries(k).map(([kk, c]) => [kk, c.records]))])))}\n`,
);
