/**
 * The scenarios. Each prepares what it needs before the clock starts (signed assertions, refresh
 * tokens, tokens to introspect, grants holding 100 tokens), warms up, then measures. Against
 * node:http, which has no OAuth, each sends requests of the same shape and gets a fixed body.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { dpopProofSource } from './dpop.ts';
import { loop, postWithAutocannon, type BodySource, type Measurement } from './load.ts';
import { cpuMs, peakRssMb, resetPeakRss } from './machine.ts';
import {
  assertionSource,
  clientAuth,
  clientCredentialsToken,
  codeFlow,
  CountingJar,
  form,
  isActive,
  post,
  prepareLoadedGrants,
  prepareRefreshTokens,
  SCOPE,
  type OAuthFixture,
  type TokenSet,
} from './oauth.ts';
import type { Target } from './targets.ts';

export const SCENARIOS = ['cc-opaque', 'cc-jwt', 'refresh', 'introspection', 'code-flow', 'revocation', 'cc-opaque-dpop', 'refresh-dpop'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

export const UNITS: Record<ScenarioName, string> = {
  'cc-opaque': 'req/s',
  'cc-jwt': 'req/s',
  refresh: 'req/s',
  introspection: 'req/s',
  'code-flow': 'flows/s',
  revocation: 'revocations/s',
  'cc-opaque-dpop': 'req/s',
  'refresh-dpop': 'req/s',
};

export interface RunSettings {
  seconds: number;
  warmupSeconds: number;
  connections: number;
  /** Grants holding ~100 tokens prepared for the revocation scenario. */
  revocationGrants: number;
  tokensPerGrant: number;
  /** Concurrent revocations. */
  revocationConcurrency: number;
  /** Signed-in sessions whose grants hold the refresh tokens. */
  refreshSessions: number;
  log(line: string): void;
}

/** What earlier scenarios learned, to size later preparations. */
export interface RunMemory {
  /** Requests per second of the client_credentials scenario on this target, if it ran. */
  tokenRate?: number;
  /** HTTP requests one code flow takes on agentauth (node:http replays as many). */
  requestsPerFlow?: number;
}

/** Cycles through a few bodies: for node:http, where content does not matter but size does. */
const cycle = (bodies: string[]): BodySource => {
  let i = 0;
  return () => bodies[i++ % bodies.length]!;
};

/** Shape-only assertions for node:http (its own issuer; nothing checks them). */
const shapeAssertions = (fx: OAuthFixture | undefined, clientId: string) => (fx ? Array.from({ length: 64 }, assertionSource(fx, clientId, 64)) : []);

export async function runScenario(
  name: ScenarioName,
  target: Target,
  s: RunSettings,
  memory: RunMemory,
  shape: OAuthFixture,
  withHeaders?: (url: string) => Record<string, string>,
): Promise<Measurement> {
  const fx = target.fixture;
  const seconds = s.seconds;
  const expectedRequests = (perSecond: number) => Math.ceil(perSecond * (s.seconds + s.warmupSeconds) * 1.5) + 500;
  // The DPoP variants (RFC 9449): the same requests, each with a fresh proof for its process's /token.
  const dpop = name.endsWith('-dpop') ? dpopProofSource(expectedRequests(memory.tokenRate ?? 1500)) : undefined;
  const headers = withHeaders ?? (dpop && ((url: string) => ({ dpop: dpop(`${url}/token`) })));
  const autocannonRun = async (path: string, body: BodySource, warm = true) => {
    if (warm) await postWithAutocannon({ urls: target.urls, path, body, headers, connections: s.connections, seconds: s.warmupSeconds });
    return measured(target, () => postWithAutocannon({ urls: target.urls, path, body, headers, connections: s.connections, seconds }));
  };

  switch (name) {
    case 'cc-opaque-dpop':
      return runScenario('cc-opaque', target, s, { ...memory }, shape, headers);
    case 'refresh-dpop':
      return runScenario('refresh', target, s, { ...memory }, shape, headers);
    case 'cc-opaque':
    case 'cc-jwt': {
      const f = fx ?? shape;
      const resource = name === 'cc-opaque' ? f.resources.opaque : f.resources.jwt;
      const assertions = fx ? assertionSource(fx, fx.ccClient, expectedRequests(memory.tokenRate ?? 1500)) : cycle(shapeAssertions(shape, shape.ccClient));
      const result = await autocannonRun('/token', () =>
        form({ grant_type: 'client_credentials', scope: SCOPE, resource, ...clientAuth(f.ccClient, assertions()) }),
      );
      if (name === 'cc-opaque') memory.tokenRate = result.rate;
      return result;
    }
    case 'refresh': {
      if (!fx)
        return autocannonRun(
          '/token',
          cycle(
            shapeAssertions(shape, shape.flowClients[0]!).map((a) =>
              form({ grant_type: 'refresh_token', refresh_token: 'x'.repeat(43), ...clientAuth(shape.flowClients[0]!, a) }),
            ),
          ),
        );
      // A refresh costs up to a client_credentials request (the peer: about one); preparing
      // tokens is slow (two requests each), so the pool is sized from that, with a margin.
      const wanted = Math.ceil(Math.min(memory.tokenRate ?? 900, 3000) * 1.0 * (s.seconds + s.warmupSeconds) * 1.3) + 500;
      const started = performance.now();
      const tokens = await prepareRefreshTokens(fx, wanted, s.refreshSessions, 16);
      s.log(`    prepared ${tokens.length} refresh tokens in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      const bodies = tokens.map((t) => ({ t, assertion: assertionSource(fx, t.clientId, 1)() }));
      let next = 0;
      let exhausted = 0;
      const body = () => {
        const item = bodies[next++];
        if (!item) {
          // Never reuse one: reuse revokes its grant. An unknown token fails harmlessly instead.
          exhausted++;
          return form({
            grant_type: 'refresh_token',
            refresh_token: `exhausted-${exhausted}`,
            ...clientAuth(fx.flowClients[0]!, assertionSource(fx, fx.flowClients[0]!, 0)()),
          });
        }
        return form({ grant_type: 'refresh_token', refresh_token: item.t.refreshToken, ...clientAuth(item.t.clientId, item.assertion) });
      };
      const result = await autocannonRun('/token', body);
      return exhausted ? { ...result, notes: { ...result.notes, pool_exhausted_requests: exhausted } } : result;
    }
    case 'introspection': {
      const f = fx ?? shape;
      const tokens = fx ? await Promise.all(Array.from({ length: 200 }, () => clientCredentialsToken(fx, fx.resources.opaque))) : ['x'.repeat(43)];
      if (fx && !(await isActive(fx, fx.ccClient, tokens[0]!))) throw new Error('a prepared token is not active');
      const assertions = fx
        ? assertionSource(fx, fx.introspector, expectedRequests(memory.tokenRate ?? 1500))
        : cycle(shapeAssertions(shape, shape.introspector));
      let i = 0;
      return autocannonRun('/token/introspection', () =>
        form({ token: tokens[i++ % tokens.length]!, token_type_hint: 'access_token', ...clientAuth(f.introspector, assertions()) }),
      );
    }
    case 'code-flow': {
      if (!fx) {
        const perFlow = memory.requestsPerFlow ?? 8;
        const url = target.urls[0]!;
        const flow = async () => {
          for (let r = 0; r < perFlow; r++) {
            const res =
              r % 2
                ? await post(`${url}/interaction/x/login`, 'csrf=x&username=bench-user&password=xxxxxxxxxxxxxxxx')
                : await fetch(`${url}/auth?response_type=code`);
            await res.arrayBuffer();
            if (res.status !== 200) return false;
          }
          return true;
        };
        await loop(s.connections, s.warmupSeconds, flow);
        return measured(target, () => loop(s.connections, seconds, flow));
      }
      let clientIndex = 0;
      const flow = async () => {
        const result = await codeFlow(fx, fx.flowClients[clientIndex++ % fx.flowClients.length]!, new CountingJar());
        memory.requestsPerFlow = result.requests;
        return true;
      };
      await loop(s.connections, s.warmupSeconds, flow);
      const result = await measured(target, () => loop(s.connections, seconds, flow));
      return { ...result, notes: { http_requests_per_flow: memory.requestsPerFlow } };
    }
    case 'revocation':
      return revocation(target, s, shape);
  }
}

/** Resets the servers' peak RSS, runs, and adds the peak (summed over processes) to the result. */
async function measured(target: Target, run: () => Promise<Measurement>): Promise<Measurement> {
  for (const pid of target.pids()) resetPeakRss(pid);
  const cpu = () => target.pids().reduce((n, pid) => n + cpuMs(pid), 0);
  const cpuBefore = cpu();
  const result = await run();
  const cpuMsPerUnit = result.completed ? Math.round(((cpu() - cpuBefore) / result.completed) * 1000) / 1000 : undefined;
  return { ...result, rssPeakMb: target.pids().reduce((n, pid) => n + peakRssMb(pid), 0), cpuMsPerUnit };
}

/**
 * Revocation (RFC 7009) of a refresh token whose grant holds ~100 tokens: the whole grant dies.
 * Timed per revocation; afterwards each grant's last access token is introspected (and on
 * agentauth its rows counted) to show every token is dead.
 */
async function revocation(target: Target, s: RunSettings, shape: OAuthFixture): Promise<Measurement> {
  const fx = target.fixture;
  if (!fx) {
    const bodies = cycle(
      shapeAssertions(shape, shape.flowClients[0]!).map((a) =>
        form({ token: 'x'.repeat(43), token_type_hint: 'refresh_token', ...clientAuth(shape.flowClients[0]!, a) }),
      ),
    );
    const once = async () => (await post(`${target.urls[0]}/token/revocation`, bodies())).status === 200;
    await loop(s.revocationConcurrency, s.warmupSeconds, once);
    return measured(target, () => loop(s.revocationConcurrency, s.seconds, once));
  }
  const started = performance.now();
  const grants = await prepareLoadedGrants(fx, s.revocationGrants + 4, s.tokensPerGrant, 16);
  s.log(`    prepared ${grants.length} grants of ~${s.tokensPerGrant} tokens in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  const grantIds = target.env ? await grantIdsOf(target.env, grants.slice(4)) : undefined;
  const before = target.env && grantIds ? await storedRows(target.env, grantIds) : undefined;
  const revoke = async (set: TokenSet) => {
    const res = await post(
      `${fx.issuer}/token/revocation`,
      form({ token: set.refreshToken, token_type_hint: 'refresh_token', ...clientAuth(set.clientId, assertionSource(fx, set.clientId, 1)()) }),
    );
    await res.arrayBuffer();
    return res.status === 200;
  };
  // Warm-up on four grants, then every other grant once, no time limit.
  await loop(s.revocationConcurrency, 60, (i) => revoke(grants[i]!), 4);
  const measuredGrants = grants.slice(4);
  const result = await measured(target, () => loop(s.revocationConcurrency, 600, (i) => revoke(measuredGrants[i]!), measuredGrants.length));
  let stillActive = 0;
  for (const set of measuredGrants) if (await isActive(fx, set.clientId, set.accessToken)) stillActive++;
  const after = target.env && grantIds ? await storedRows(target.env, grantIds) : undefined;
  return {
    ...result,
    notes: {
      grants: measuredGrants.length,
      ...(before !== undefined ? { stored_tokens_per_grant_before: Math.round(before / measuredGrants.length) } : { tokens_per_grant: `~${s.tokensPerGrant}` }),
      ...(after !== undefined ? { stored_tokens_left_after: after } : {}),
      last_access_token_still_active: stillActive,
    },
  };
}

async function withDb<T>(env: NodeJS.ProcessEnv, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: env.DATABASE_URL });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** The grants these refresh tokens belong to (found by the tokens' hashes). */
function grantIdsOf(env: NodeJS.ProcessEnv, sets: TokenSet[]): Promise<string[]> {
  const hashes = sets.map((g) => createHash('sha256').update(g.refreshToken).digest());
  return withDb(env, async (client) =>
    (
      await client.query<{ grant_id: string }>("SELECT DISTINCT grant_id FROM oidc_artifacts WHERE model = 'RefreshToken' AND id_hash = ANY($1)", [hashes])
    ).rows.map((r) => r.grant_id),
  );
}

/** Credentials stored under these grants. */
function storedRows(env: NodeJS.ProcessEnv, grantIds: string[]): Promise<number> {
  return withDb(
    env,
    async (client) => (await client.query<{ n: number }>('SELECT count(*)::int AS n FROM oidc_artifacts WHERE grant_id = ANY($1)', [grantIds])).rows[0]!.n,
  );
}
