/**
 * Issue 14, measured outside the tests:
 * 1. 300 parallel wrong-password sign-ins from one address: how many passwords were checked
 *    (the limit, LOGIN_FAILURE_LIMIT = 20) and how many refused;
 * 2. another agent's client_credentials latency (p50/p99) while quiet, during that burst, and
 *    during a flood that does hash (300 sign-ins from 300 addresses under unknown names);
 * 3. purging 1 M expired artifacts (`agentauth purge`) and 1 M audit rows (`audit purge`): time,
 *    and whether any statement hit the 5 s statement timeout (the command would fail).
 *
 *   DATABASE_URL=… REDIS_URL=… node bench/sign-in-and-purge.ts [--burst 300] [--rows 1000000]
 */
import { parseArgs } from 'node:util';
import * as client from 'openid-client';
import type { CookieJar } from '../test/helpers/browserless.ts';

const { values } = parseArgs({
  options: { burst: { type: 'string', default: '300' }, rows: { type: 'string', default: '1000000' }, skip: { type: 'string', default: '' } },
});
const burstSize = Number(values.burst);
const rows = Number(values.rows);
const skip = new Set(values.skip.split(',').filter(Boolean));

process.env.DATABASE_URL ??= 'postgres://postgres@127.0.0.1:5432/test';
process.env.REDIS_URL ??= 'redis://127.0.0.1:6379';
// The test helpers read DATABASE_URL when loaded: import them only now.
const { browse, csrfOf, openLoginPage } = await import('../test/helpers/browserless.ts');
const { openDirect } = await import('../test/helpers/direct-db.ts');
const { clientFor, createAgent, createScope, createUser } = await import('../test/helpers/factories.ts');
const { startServer } = await import('../test/helpers/server.ts');

// TOKEN_RATE_LIMIT high: the other agent's requests measure latency, not its allowance.
const server = await startServer({ TRUST_PROXY: 'true', LOG_LEVEL: 'warn', TOKEN_RATE_LIMIT: '1000000' });
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const ms = (x: number) => `${x.toFixed(1)} ms`;

try {
  await createScope(server, 'bench:read', 'Bench');
  const user = await createUser(server);
  const browserAgent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'bench:read' });
  const browserConfig = await clientFor(server, browserAgent);
  const machine = await clientFor(server, await createAgent(server, { grantTypes: ['client_credentials'], scope: 'bench:read' }));

  async function loginPage(): Promise<{ jar: CookieJar; html: string; uid: string }> {
    const url = client.buildAuthorizationUrl(browserConfig, {
      redirect_uri: 'http://127.0.0.1/cb',
      scope: 'bench:read',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    });
    return openLoginPage(server.issuer, url);
  }
  const signIn = (page: { jar: CookieJar; html: string; uid: string }, username: string, address: string) =>
    browse(page.jar, `${server.issuer}/interaction/${page.uid}/login`, {
      method: 'POST',
      body: new URLSearchParams({ csrf: csrfOf(page.html), username, password: 'wrong password' }),
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': address },
    }).then((res) => (res.status === 303 && /error=credentials/.test(res.headers.get('location') ?? '') ? 'checked' : String(res.status)));

  /** client_credentials requests, 4 at a time, until `until` settles (or `count` are done). */
  async function tokenLatencies(until: Promise<unknown> | undefined, count: number): Promise<{ latencies: number[]; failures: number }> {
    const latencies: number[] = [];
    let failures = 0;
    let done = false;
    void until?.finally(() => {
      done = true;
    });
    const worker = async () => {
      while (until ? !done : latencies.length + failures < count) {
        const start = performance.now();
        try {
          await client.clientCredentialsGrant(machine, { scope: 'bench:read' });
          latencies.push(performance.now() - start);
        } catch {
          failures += 1;
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    return { latencies, failures };
  }
  const summary = (label: string, r: { latencies: number[]; failures: number }) =>
    console.log(`${label}: ${r.latencies.length} ok, ${r.failures} failed; p50 ${ms(percentile(r.latencies, 50))}, p99 ${ms(percentile(r.latencies, 99))}`);

  if (!skip.has('sign-in')) {
    await tokenLatencies(undefined, 50); // warm-up
    const quiet = await tokenLatencies(undefined, 400);
    summary('client_credentials, quiet', quiet);

    const page = await loginPage();
    const start = performance.now();
    const burst = Promise.all(Array.from({ length: burstSize }, () => signIn(page, user.username, '198.51.100.7')));
    const during = await tokenLatencies(burst, 0);
    const outcomes = await burst;
    const count = (what: string) => outcomes.filter((o) => o === what).length;
    console.log(
      `${burstSize} parallel wrong passwords from one address (${ms(performance.now() - start)}): ${count('checked')} checked, ${count('429')} × 429, ${count('503')} × 503, other ${burstSize - count('checked') - count('429') - count('503')}`,
    );
    summary('client_credentials, during that burst', during);

    const pages = await Promise.all(Array.from({ length: 10 }, () => loginPage()));
    const floodStart = performance.now();
    const flood = Promise.all(Array.from({ length: burstSize }, (_, i) => signIn(pages[i % pages.length]!, `nobody-${i}`, `203.0.113.${i % 250}`)));
    const duringFlood = await tokenLatencies(flood, 0);
    const floodOutcomes = await flood;
    const floodCount = (what: string) => floodOutcomes.filter((o) => o === what).length;
    console.log(
      `${burstSize} parallel sign-ins from ${Math.min(burstSize, 250)} addresses (${ms(performance.now() - floodStart)}): ${floodCount('checked')} checked, ${floodCount('503')} × 503 (hash queue full), ${floodCount('429')} × 429`,
    );
    summary('client_credentials, during that flood', duringFlood);
  }

  if (!skip.has('purge')) {
    const db = await openDirect(server);
    try {
      let start = performance.now();
      await db.query(`INSERT INTO oidc_artifacts (model, id_hash, payload, expires_at)
        SELECT 'AccessToken', sha256(('bench-' || g)::bytea), '{"accountId":"x","clientId":"y"}', now() - interval '1 hour' FROM generate_series(1, ${rows}) g`);
      await db.query(`INSERT INTO audit_events (occurred_at, event_type, actor_type, outcome, details)
        SELECT now(), 'bench.row', 'system', 'success', '{"n":1}' FROM generate_series(1, ${rows})`);
      console.log(`inserted ${rows} expired artifacts and ${rows} audit rows in ${ms(performance.now() - start)}`);
      start = performance.now();
      // The running server seals new audit rows every 250 ms; wait until it has sealed them all.
      for (;;) {
        const [row] = await db.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM audit_events WHERE id > (SELECT coalesce(max(last_id), 0) FROM audit_seals)',
        );
        if (row?.n === 0) break;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      console.log(`sealed in ${ms(performance.now() - start)}`);
    } finally {
      await db.close();
    }
    let start = performance.now();
    const purge = await server.cli(['purge', '--json']);
    console.log(`agentauth purge: exit ${purge.code} in ${ms(performance.now() - start)}: ${purge.stdout.trim() || purge.stderr.trim()}`);
    start = performance.now();
    const audit = await server.cli(['audit', 'purge', '--before', new Date(Date.now() + 60_000).toISOString(), '--json']);
    console.log(`agentauth audit purge (${rows} rows): exit ${audit.code} in ${ms(performance.now() - start)}: ${audit.stdout.trim() || audit.stderr.trim()}`);
    const verify = await server.cli(['audit', 'verify', '--json']);
    console.log(`audit verify after the purge: exit ${verify.code}`);
  }
} finally {
  await server.stop();
}
