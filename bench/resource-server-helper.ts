/**
 * What the resource-server helper costs an API per request: node:http with no check, then a JWT
 * access token and an opaque one, each checked on every request (cacheSeconds 0: a signature
 * check, an introspection call to agentauth) and from the helper's cache (the default, 30 s).
 *
 *   node bench/resource-server-helper.ts [--seconds 10] [--connections 16]
 * Uses PostgreSQL and Redis when DATABASE_URL / REDIS_URL are set, else the embedded default.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import * as client from 'openid-client';
import { clientFor, createAgent, createScope } from '../test/helpers/factories.ts';
import { startServer } from '../test/helpers/server.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '10' }, connections: { type: 'string', default: '16' } } });
const seconds = Number(values.seconds);
const connections = Number(values.connections);

async function startApi(env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [path.join(import.meta.dirname, 'servers', 'protected-api.ts')], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [chunk] = (await once(child.stdout!, 'data')) as [Buffer];
  return { child, url: `http://127.0.0.1:${chunk.toString().trim()}` };
}

async function load(url: string, token: string | undefined, duration: number) {
  const r = await autocannon({ url, connections, duration, requests: [{ method: 'GET', headers: token ? { authorization: `Bearer ${token}` } : {} }] });
  return { rps: Math.round(r.requests.average), p50: r.latency.p50, p99: r.latency.p99, errors: r.non2xx + r.errors };
}

const server = await startServer({ ALLOW_PRIVATE_FETCH: 'true', LOG_LEVEL: 'warn', TOKEN_RATE_LIMIT: '1000000' });
const apis: ChildProcess[] = [];
try {
  await createScope(server, 'bench:read', 'Benchmark');
  const introspector = await createAgent(server, { grantTypes: ['client_credentials'] });
  const jwtResource = 'http://127.0.0.1:1/jwt-api';
  const opaqueResource = 'http://127.0.0.1:1/opaque-api';
  for (const args of [
    ['resources', 'create', jwtResource, '--scopes', 'bench:read', '--token-format', 'jwt'],
    ['resources', 'create', opaqueResource, '--scopes', 'bench:read', '--client', introspector.clientId],
  ]) {
    const made = await server.cli(args);
    if (made.code !== 0) throw new Error(made.stderr);
  }
  const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'bench:read' });
  const config = await clientFor(server, agent);
  const jwtToken = (await client.clientCredentialsGrant(config, { scope: 'bench:read', resource: jwtResource })).access_token;
  const opaqueToken = (await client.clientCredentialsGrant(config, { scope: 'bench:read', resource: opaqueResource })).access_token;
  const privateJwk = JSON.stringify({ ...(await crypto.subtle.exportKey('jwk', introspector.privateKey!)), kid: introspector.kid });
  const env = {
    ISSUER: server.issuer,
    JWT_RESOURCE: jwtResource,
    OPAQUE_RESOURCE: opaqueResource,
    INTROSPECTOR_ID: introspector.clientId,
    INTROSPECTOR_JWK: privateJwk,
  };
  const cached = await startApi({ ...env, CACHE_SECONDS: '30' });
  const uncached = await startApi({ ...env, CACHE_SECONDS: '0' });
  apis.push(cached.child, uncached.child);

  const rows: [string, string, string | undefined][] = [
    ['node:http, no check', `${cached.url}/open`, undefined],
    ['JWT, verified on every request', `${uncached.url}/jwt`, jwtToken],
    ['JWT, verification cached', `${cached.url}/jwt`, jwtToken],
    ['opaque, introspected on every request', `${uncached.url}/opaque`, opaqueToken],
    ['opaque, introspection cached', `${cached.url}/opaque`, opaqueToken],
  ];
  console.log(`| ${connections} connections, ${seconds} s | req/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|`);
  for (const [name, url, token] of rows) {
    await load(url, token, 2); // warm-up: JWKS, metadata, JIT
    const r = await load(url, token, seconds);
    console.log(`| ${name} | ${r.rps} | ${r.p50} | ${r.p99} | ${r.errors} |`);
  }
} finally {
  for (const child of apis) child.kill();
  await server.stop();
}
