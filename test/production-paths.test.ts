/**
 * Issue 12's regressions on the paths a deployment takes and the suite once missed:
 * - every endpoint check decides by oidc-provider's route, which folds case and one trailing
 *   slash (`/reg/`, `/token/introspection/`, `/TOKEN` are the same endpoints);
 * - a request-target Koa cannot parse is a 400 with the usual headers, logged at warn;
 * - a request that arrives while the server starts is answered at once.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { postToken } from './helpers/browserless.ts';
import { createAgent, createScope } from './helpers/factories.ts';
import { clientAssertion, generateTestKey, type TestKey } from './helpers/jwt.ts';
import { Redis } from 'ioredis';
import { openDirect } from './helpers/direct-db.ts';
import { waitFor } from './helpers/wait.ts';
import { freePort, newDeployment, REAL_SERVICES, ROOT, startServer, stopProcess, type TestServer } from './helpers/server.ts';
import { serverNodeFlags } from '../src/node-flags.ts';

/** Sends one raw HTTP/1.1 request and returns the status line, headers and body as text. */
function rawRequest(port: number, head: string, timeoutMs = 5_000): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(`${head}\r\nHost: localhost\r\nConnection: close\r\n\r\n`));
    let out = '';
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer to ${head.split(' ').slice(0, 2).join(' ')} within ${timeoutMs} ms`)));
    socket.on('data', (d: Buffer) => {
      out += d;
    });
    socket.on('error', reject);
    socket.on('close', () => {
      const [headText = '', body = ''] = out.split('\r\n\r\n');
      const [statusLine = '', ...lines] = headText.split('\r\n');
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body });
    });
  });
}

const portOf = (server: TestServer) => Number(new URL(server.baseUrl).port);

describe('endpoint checks decide by oidc-provider route, not by path string', () => {
  let server: TestServer;
  let key: TestKey;
  let clientId: string;
  before(async () => {
    server = await startServer({ REGISTRATION_RATE_LIMIT: '3' });
    await createScope(server, 'sync:run', 'Sync');
    key = generateTestKey('ES256');
    ({ clientId } = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'sync:run', jwks: { keys: [key.publicJwk] } }));
  });
  after(() => server?.stop());

  it('issue 12: POST /reg/ and /REG meet the initial-access-token gate and the registration rate limit', async () => {
    const register = (p: string) =>
      fetch(`${server.issuer}${p}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ redirect_uris: ['http://127.0.0.1/cb'] }),
      });
    for (const p of ['/reg', '/reg/', '/REG']) {
      const res = await register(p);
      assert.equal(res.status, 401, p);
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_token', p);
      assert.match(res.headers.get('www-authenticate') ?? '', /initial access token is required/, p);
    }
    const limited = await register('/Reg/');
    assert.equal(limited.status, 429);
    assert.equal(((await limited.json()) as { error: string }).error, 'too_many_requests');
  });

  const token = (endpoint: string, scope: string) =>
    fetch(`${server.issuer}${endpoint}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'client_credentials',
        scope,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: clientAssertion(key, clientId, server.issuer),
      }),
    });

  it('issue 12: /token/introspection/ is audited like /token/introspection', async () => {
    const issued = (await (await token('/token', 'sync:run')).json()) as { access_token: string };
    for (const p of ['/token/introspection/', '/TOKEN/Introspection']) {
      const res = await fetch(`${server.issuer}${p}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          token: issued.access_token,
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: clientAssertion(key, clientId, server.issuer),
        }),
      });
      assert.equal(res.status, 200, p);
      assert.equal(((await res.json()) as { active: boolean }).active, true, p);
    }
    const exported = await server.cli(['audit', 'export', '--client', clientId, '--json']);
    const rows = (JSON.parse(exported.stdout) as { events: { event_type: string }[] }).events;
    assert.equal(rows.filter((r) => r.event_type === 'token.introspected').length, 2);
  });

  it('issue 12: /TOKEN checks the configuration generation before answering, as /token does', {
    skip: !REAL_SERVICES && 'needs Redis: the embedded store cannot be changed from outside the process',
  }, async () => {
    // A scope added behind the server's back, with no pub/sub nudge: only the per-request
    // generation check can make the token endpoint see it.
    const db = await openDirect(server);
    const redis = new Redis(server.env.REDIS_URL!, { keyPrefix: server.env.REDIS_KEY_PREFIX });
    try {
      await db.query("INSERT INTO scopes (name, description) VALUES ('sync:late', 'Sync later')");
      await db.query("UPDATE clients SET metadata = jsonb_set(metadata, '{scope}', '\"sync:run sync:late\"') WHERE client_id = $1", [clientId]);
      const [row] = await db.query<{ generation: string }>(
        'UPDATE config_generation SET generation = generation + 1 WHERE id = 1 RETURNING generation::text AS generation',
      );
      await redis.set('config-generation', row!.generation);
      const res = await token('/TOKEN', 'sync:late');
      assert.equal(res.status, 200, await res.clone().text());
      assert.equal(((await res.json()) as { scope: string }).scope, 'sync:late');
    } finally {
      redis.disconnect();
      await db.close();
    }
  });
});

describe('a malformed request-target', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server?.stop());

  it('issue 12: GET http://[ is a 400 with the security headers and a warn-level line, no stack', async () => {
    const res = await rawRequest(portOf(server), 'GET http://[ HTTP/1.1');
    assert.equal(res.status, 400);
    assert.equal(res.headers['x-frame-options'], 'DENY');
    assert.match(res.headers['content-security-policy'] ?? '', /default-src 'none'/);
    assert.deepEqual(JSON.parse(res.body), { error: 'invalid_request', error_description: 'The request target is not a valid URL.' });
    // The log line reaches us through the server's stdout, possibly after the answer: wait for it.
    const requestLine = () =>
      server
        .output()
        .split('\n')
        .filter((l) => l.includes('"msg":"request"') && l.includes('"path":"(malformed)"'));
    await waitFor('the request line', () => (requestLine().length ? true : undefined));
    const lines = server
      .output()
      .split('\n')
      .filter((l) => l.includes('malformed request-target'));
    assert.equal(lines.length, 1);
    assert.equal(JSON.parse(lines[0]!).level, 40);
    assert.doesNotMatch(server.output(), /Invalid URL|"level":50/);
    assert.equal((await fetch(`${server.issuer}/healthz`)).status, 200);
  });
});

describe('a request that arrives while the server starts', () => {
  it('issue 12: is answered at once: /healthz 200, /readyz and the rest 503 with Retry-After, until ready', async () => {
    const deployment = await newDeployment();
    const port = await freePort();
    const child = spawn(process.execPath, [...serverNodeFlags(), path.join(ROOT, 'src/main.ts')], {
      env: { ...deployment.env, PORT: String(port), ISSUER: `http://localhost:${port}` },
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => {
      output += d;
    });
    child.stderr.on('data', (d: Buffer) => {
      output += d;
    });
    try {
      // The first connection the socket accepts: the server has not built its provider yet.
      let first: Awaited<ReturnType<typeof rawRequest>> | undefined;
      for (let i = 0; i < 3000 && !first && child.exitCode === null; i += 1) {
        first = await rawRequest(port, 'GET /readyz HTTP/1.1', 2_000).catch((err: NodeJS.ErrnoException) => {
          if (err.code === 'ECONNREFUSED') return undefined;
          throw err;
        });
        if (!first) await new Promise((resolve) => setTimeout(resolve, 5));
      }
      assert.ok(first, `the server never accepted a connection:\n${output}`);
      assert.equal(first.status, 503);
      assert.equal(first.headers['retry-after'], '1');
      assert.equal(first.headers['x-frame-options'], 'DENY');
      assert.equal(JSON.parse(first.body).error, 'temporarily_unavailable');
      assert.doesNotMatch(output, /agentauth is running at/, 'the first answer came before the server was ready');
      const alive = await rawRequest(port, 'GET /healthz HTTP/1.1');
      assert.equal(alive.status, 200);
      // Once it is ready, the same probe says so.
      for (let i = 0; i < 600 && !output.includes('agentauth is running at'); i += 1) await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal((await rawRequest(port, 'GET /readyz HTTP/1.1')).status, 200);
    } finally {
      await stopProcess(child, 'SIGKILL');
      await deployment.cleanup();
    }
  });
});

describe("a server started without the Dockerfile's Node flags (`npm start` on Node 22)", () => {
  it('issues and introspects a token as the image does, and its banner says what the flag saves', async (t) => {
    if (serverNodeFlags().length === 0) return t.skip('this Node keeps AsyncLocalStorage on AsyncContextFrame without a flag');
    const server = await startServer({}, undefined, []);
    try {
      assert.match(server.output(), /runtime: Node [\d.]+; `node --experimental-async-context-frame bin\/start\.js`/);
      await createScope(server, 'plain:run', 'Plain');
      const key = generateTestKey('ES256');
      const { clientId } = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'plain:run', jwks: { keys: [key.publicJwk] } });
      const assertion = () => ({
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: clientAssertion(key, clientId, server.issuer),
      });
      const introspect = (params: Record<string, string>) =>
        fetch(`${server.issuer}/token/introspection`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ ...params, ...assertion() }),
        });
      const issued = await postToken(server.issuer, { grant_type: 'client_credentials', scope: 'plain:run', ...assertion() });
      assert.equal(issued.status, 200);
      const { access_token } = (await issued.json()) as { access_token: string };
      const introspected = (await (await introspect({ token: access_token })).json()) as { active: boolean; client_id: string };
      assert.deepEqual([introspected.active, introspected.client_id], [true, clientId]);
    } finally {
      await server.stop();
    }
  });

  it('is not what the tests start: their servers run with the flag and say nothing of it', async () => {
    const server = await startServer();
    try {
      assert.doesNotMatch(server.output(), /runtime: Node/);
    } finally {
      await server.stop();
    }
  });
});
