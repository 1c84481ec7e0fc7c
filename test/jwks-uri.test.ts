/**
 * Clients whose keys are published at a jwks_uri: openid-client (ES256) and oauth4webapi (EdDSA)
 * authenticate through it; the fetch is bounded in size and time, follows no redirect, carries
 * no credentials (W-21, W-22); and registration refuses URLs aimed at private addresses (W-20).
 * The jwks_uri is a test host reached by name over https, as in production; ALLOW_PRIVATE_FETCH
 * is on only in the test about it.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import * as oauth from 'oauth4webapi';
import * as client from 'openid-client';
import { postToken } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, generateAgentKey } from './helpers/factories.ts';
import { clientAssertion, generateTestKey } from './helpers/jwt.ts';
import { openDirect } from './helpers/direct-db.ts';
import { REAL_SERVICES, startServer, type TestServer } from './helpers/server.ts';
import { createTestHost, testHostEnv, testHostsUnavailable } from './helpers/test-host.ts';

interface JwksServer {
  url: string;
  /** What each path answers; requests are recorded. */
  routes: Map<string, (res: http.ServerResponse) => void>;
  requests: http.IncomingHttpHeaders[];
  close(): Promise<void>;
}

async function startJwksServer(local = false): Promise<JwksServer> {
  const routes = new Map<string, (res: http.ServerResponse) => void>();
  const requests: http.IncomingHttpHeaders[] = [];
  const handler: http.RequestListener = (req, res) => {
    requests.push(req.headers);
    const route = routes.get(req.url ?? '');
    if (route) route(res);
    else res.writeHead(404).end();
  };
  if (!local) {
    const host = await createTestHost('jwks', handler);
    return { url: host.origin, routes, requests, close: () => host.close() };
  }
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    routes,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const json = (body: unknown) => (res: http.ServerResponse) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));

describe('jwks_uri clients', { skip: testHostsUnavailable }, () => {
  let server: TestServer;
  let jwks: JwksServer;

  before(async () => {
    server = await startServer(testHostEnv());
    jwks = await startJwksServer();
    await createScope(server, 'sync:run', 'Sync');
  });
  after(async () => {
    await jwks?.close();
    await server?.stop();
  });

  it('lets openid-client authenticate with an ES256 key from a jwks_uri', async () => {
    const key = await generateAgentKey();
    jwks.routes.set('/es256', json({ keys: [key.publicJwk] }));
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'sync:run', jwksUri: `${jwks.url}/es256` });
    const config = await clientFor(server, { ...agent, privateKey: key.privateKey, kid: key.publicJwk.kid });
    const tokens = await client.clientCredentialsGrant(config, { scope: 'sync:run' });
    assert.ok(tokens.access_token);
  });

  it('lets oauth4webapi authenticate with an EdDSA key from a jwks_uri, and sends no credentials there', async () => {
    const pair = (await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify'])) as unknown as { privateKey: CryptoKey; publicKey: CryptoKey };
    // No alg on the key: oauth4webapi signs as "Ed25519" (RFC 9864), others as "EdDSA".
    const publicJwk = { ...(await crypto.subtle.exportKey('jwk', pair.publicKey)), kid: 'ed-1', use: 'sig' };
    jwks.routes.set('/eddsa', json({ keys: [publicJwk] }));
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'sync:run', jwksUri: `${jwks.url}/eddsa` });
    const issuer = new URL(server.issuer);
    const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { [oauth.allowInsecureRequests]: true }));
    const oauthClient: oauth.Client = { client_id: agent.clientId };
    const response = await oauth.clientCredentialsGrantRequest(
      as,
      oauthClient,
      oauth.PrivateKeyJwt({ key: pair.privateKey, kid: 'ed-1' }),
      { scope: 'sync:run' },
      { [oauth.allowInsecureRequests]: true },
    );
    const result = await oauth.processClientCredentialsResponse(as, oauthClient, response);
    assert.ok(result.access_token);
    const fetched = jwks.requests.at(-1)!;
    assert.equal(fetched.authorization, undefined);
    assert.equal(fetched.cookie, undefined);
    assert.ok(!fetched['user-agent'], 'no identifying user agent');
  });

  async function refusedThrough(route: (res: http.ServerResponse) => void, label: string) {
    const key = generateTestKey('ES256');
    const path = `/${label}`;
    jwks.routes.set(path, route);
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], jwksUri: `${jwks.url}${path}` });
    const started = performance.now();
    const res = await postToken(server.issuer, {
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: clientAssertion(key, agent.clientId, server.issuer),
    });
    assert.ok(res.status === 400 || res.status === 401, `${label}: ${res.status}`);
    return performance.now() - started;
  }

  it('W-21: gives up on a huge, a slow or a redirecting jwks_uri, and stays responsive', async () => {
    const key = generateTestKey('ES256');
    await refusedThrough(
      (res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [key.publicJwk], pad: 'x'.repeat(1024 * 1024) })),
      'huge',
    );
    const slowMs = await refusedThrough((res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"keys":[');
      // Never finishes: the server must time out on its own.
    }, 'slow');
    assert.ok(slowMs < 10_000, `slow jwks_uri took ${Math.round(slowMs)} ms`);
    jwks.routes.set('/target', json({ keys: [key.publicJwk] }));
    await refusedThrough((res) => res.writeHead(302, { location: `${jwks.url}/target` }).end(), 'redirect');
    assert.equal((await fetch(`${server.issuer}/healthz`)).status, 200);
  });

  it('issue-14: a token request waiting on a slow jwks_uri holds no database connection', {
    skip: !REAL_SERVICES && 'the embedded database has no connection pool to watch',
  }, async () => {
    const key = await generateAgentKey();
    let arrived!: () => void;
    const fetching = new Promise<void>((resolve) => {
      arrived = resolve;
    });
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => {
      answer = resolve;
    });
    jwks.routes.set('/held', (res) => {
      arrived();
      void answered.then(() => json({ keys: [key.publicJwk] })(res));
    });
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'sync:run', jwksUri: `${jwks.url}/held` });
    const config = await clientFor(server, { ...agent, privateKey: key.privateKey, kid: key.publicJwk.kid });
    const request = client.clientCredentialsGrant(config, { scope: 'sync:run' });
    await fetching; // the server is now waiting on the jwks_uri host
    const db = await openDirect(server);
    try {
      // A transaction left open while waiting shows as idle in transaction after its client lookup.
      const held = await db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction' AND query LIKE '%FROM clients%'",
      );
      assert.deepEqual(held, [{ n: 0 }]);
    } finally {
      await db.close();
      answer();
    }
    assert.ok((await request).access_token);
  });
});

describe('ALLOW_PRIVATE_FETCH (development only)', () => {
  let server: TestServer;
  let jwks: JwksServer;
  before(async () => {
    server = await startServer({ ALLOW_PRIVATE_FETCH: 'true' });
    jwks = await startJwksServer(true);
    await createScope(server, 'sync:run', 'Sync');
  });
  after(async () => {
    await jwks?.close();
    await server?.stop();
  });

  it('warns loudly, and widens the address policy to http on loopback through the same module', async () => {
    assert.match(server.output(), /ALLOW_PRIVATE_FETCH/);
    const key = await generateAgentKey();
    jwks.routes.set('/local', json({ keys: [key.publicJwk] }));
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'sync:run', jwksUri: `${jwks.url}/local` });
    const config = await clientFor(server, { ...agent, privateKey: key.privateKey, kid: key.publicJwk.kid });
    assert.ok((await client.clientCredentialsGrant(config, { scope: 'sync:run' })).access_token);
    // The module still refuses redirects and plain http to other hosts.
    const refused = await server.cli([
      'clients',
      'create',
      '--name',
      'remote-http',
      '--grant-types',
      'client_credentials',
      '--jwks-uri',
      'http://agent.example/jwks',
    ]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /only https/);
  });
});

describe('jwks_uri registration without ALLOW_PRIVATE_FETCH', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server?.stop());

  it('W-20: refuses jwks_uri values aimed at private addresses or without TLS', async () => {
    const targets = [
      'https://127.0.0.1/jwks',
      'https://[::1]/jwks',
      'https://[::ffff:127.0.0.1]/jwks',
      'https://2130706433/jwks',
      'https://0x7f.1/jwks',
      'https://127.1/jwks',
      'https://169.254.169.254/latest/meta-data/',
      'https://10.0.0.1/jwks',
      'https://100.64.0.1/jwks',
      'https://[fd00::1]/jwks',
      'https://localhost./jwks',
      'https://localhost/jwks',
      'http://agent.example/jwks',
      'file:///etc/passwd',
      'gopher://agent.example/x',
      'https://user:pass@agent.example/jwks',
      'https://agent.example/jwks#frag',
    ];
    for (const uri of targets) {
      const r = await server.cli(['clients', 'create', '--name', 'ssrf', '--grant-types', 'client_credentials', '--jwks-uri', uri]);
      assert.equal(r.code, 1, uri);
      assert.match(r.stderr, /invalid_client_metadata: jwks_uri/, uri);
    }
    const ok = await server.cli([
      'clients',
      'create',
      '--name',
      'fine',
      '--grant-types',
      'client_credentials',
      '--jwks-uri',
      'https://agent.example/.well-known/jwks.json',
    ]);
    assert.equal(ok.code, 0, ok.stderr);
  });
});
