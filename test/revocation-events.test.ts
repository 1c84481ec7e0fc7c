/**
 * Revocation reaches the agent: every way a grant dies queues a signed Security Event Token
 * (RFC 8417) in the same transaction, pushed to the agent's event_delivery_uri (RFC 8935) with
 * retries; the signature verifies against our JWKS; a receiver that was down gets it later; a
 * SIGKILL loses nothing. Receivers are test hosts reached by name over https, as in production
 * (no ALLOW_PRIVATE_FETCH); one whose name resolves to a refused address is never dialled.
 */
import assert from 'node:assert/strict';
import { createPublicKey, verify } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { browse, codeFlowTokens, CookieJar, csrfOf, followOnIssuer, postForm } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestUser } from './helpers/factories.ts';
import { spawnServer, startServer, stopProcess, type TestServer } from './helpers/server.ts';
import { createTestHost, testHostEnv, testHostsUnavailable } from './helpers/test-host.ts';
import { waitFor } from './helpers/wait.ts';

const EVENT = 'https://agentauth.dev/secevent/grant-revoked';
const REDIRECT_URI = 'http://127.0.0.1/cb';

interface Received {
  contentType: string;
  token: string;
}

async function startReceiver(): Promise<{
  url: string;
  received: Received[];
  logouts: string[];
  failNext: number;
  setFailNext(n: number): void;
  close(): Promise<void>;
}> {
  const state = { received: [] as Received[], logouts: [] as string[], failNext: 0 };
  const host = await createTestHost('events', (req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => {
      body += d;
    });
    req.on('end', () => {
      if (req.url === '/logout') {
        state.logouts.push(new URLSearchParams(body).get('logout_token') ?? '');
        res.writeHead(200).end();
        return;
      }
      if (state.failNext > 0) {
        state.failNext -= 1;
        res.writeHead(503).end();
        return;
      }
      state.received.push({ contentType: req.headers['content-type'] ?? '', token: body });
      res.writeHead(202).end();
    });
  });
  return {
    url: `${host.origin}/events`,
    get received() {
      return state.received;
    },
    get logouts() {
      return state.logouts;
    },
    get failNext() {
      return state.failNext;
    },
    setFailNext: (n) => {
      state.failNext = n;
    },
    close: () => host.close(),
  };
}

function decode(token: string): { header: Record<string, unknown>; claims: Record<string, unknown> } {
  const [h, c] = token.split('.');
  return { header: JSON.parse(Buffer.from(h!, 'base64url').toString()), claims: JSON.parse(Buffer.from(c!, 'base64url').toString()) };
}

async function verifiesWithJwks(issuer: string, token: string): Promise<boolean> {
  const { header } = decode(token);
  const jwks = (await (await fetch(`${issuer}/jwks`)).json()) as { keys: { kid: string }[] };
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  if (!jwk) return false;
  const [h, c, s] = token.split('.');
  return verify(
    'sha256',
    Buffer.from(`${h}.${c}`),
    { key: createPublicKey({ key: jwk as never, format: 'jwk' }), dsaEncoding: 'ieee-p1363' },
    Buffer.from(s!, 'base64url'),
  );
}

describe('revocation events', { skip: testHostsUnavailable }, () => {
  let server: TestServer;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let user: TestUser;

  before(async () => {
    server = await startServer(testHostEnv());
    receiver = await startReceiver();
    await createScope(server, 'inbox:read', 'Read your inbox');
    user = await createUser(server);
  });
  after(async () => {
    await receiver?.close();
    await server?.stop();
  });

  async function connectedAgent(target = server) {
    const agent = await createAgent(target, { redirectUris: [REDIRECT_URI], scope: 'inbox:read' });
    assert.equal((await target.cli(['clients', 'update', agent.clientId, '--event-uri', receiver.url])).code, 0);
    const config = await clientFor(target, agent);
    const tokens = await codeFlowTokens(target.issuer, config, user, { scope: 'inbox:read', redirectUri: REDIRECT_URI });
    return { agent, config, tokens };
  }

  const eventsFor = (clientId: string) => receiver.received.map((r) => ({ ...r, ...decode(r.token) })).filter((e) => e.claims.aud === clientId);

  it('pushes a signed event when the user revokes the agent on the connected agents page', async () => {
    const { agent } = await connectedAgent();
    const jar = new CookieJar();
    const res = await followOnIssuer(jar, server.issuer, await browse(jar, `${server.issuer}/account`));
    let html = await res.text();
    const login = /action="(\/interaction\/[^"]+\/login)"/.exec(html)?.[1];
    if (login)
      html = await (
        await followOnIssuer(
          jar,
          server.issuer,
          await postForm(jar, `${server.issuer}${login}`, { csrf: csrfOf(html), username: user.username, password: user.password }),
        )
      ).text();
    const revokePath = /href="(\/account\/agents\/[^"]+\/revoke)"/.exec(html)![1]!;
    const confirm = await (await browse(jar, `${server.issuer}${revokePath}`)).text();
    await postForm(jar, `${server.issuer}${revokePath}`, { csrf: csrfOf(confirm) });

    const [event] = await waitFor('the event', () => (eventsFor(agent.clientId).length ? eventsFor(agent.clientId) : undefined));
    assert.equal(event!.contentType, 'application/secevent+jwt');
    assert.equal(event!.header.typ, 'secevent+jwt');
    assert.equal(event!.claims.iss, server.issuer);
    const body = (event!.claims.events as Record<string, { grant_id: string; sub: string; client_id: string; reason: string }>)[EVENT]!;
    assert.equal(body.sub, user.id);
    assert.equal(body.client_id, agent.clientId);
    assert.equal(body.reason, 'user_revoked');
    assert.ok(await verifiesWithJwks(server.issuer, event!.token), 'the signature verifies against our JWKS');
    const listed = JSON.parse((await server.cli(['events', 'list', '--json'])).stdout).events as { client_id: string; state: string }[];
    assert.equal(listed.find((e) => e.client_id === agent.clientId)?.state, 'delivered');
  });

  it('pushes an event when reuse of a refresh token kills the grant, and when an admin disables the agent', async () => {
    const reused = await connectedAgent();
    const second = await client.refreshTokenGrant(reused.config, reused.tokens.refresh_token!);
    await client.refreshTokenGrant(reused.config, second.refresh_token!);
    await assert.rejects(client.refreshTokenGrant(reused.config, reused.tokens.refresh_token!));
    await waitFor('the reuse event', () => (eventsFor(reused.agent.clientId).length ? true : undefined));

    const disabled = await connectedAgent();
    assert.equal((await server.cli(['clients', 'disable', disabled.agent.clientId])).code, 0);
    const [event] = await waitFor('the disable event', () => (eventsFor(disabled.agent.clientId).length ? eventsFor(disabled.agent.clientId) : undefined));
    assert.equal((event!.claims.events as Record<string, { reason: string }>)[EVENT]!.reason, 'client_disabled');
  });

  it('sends an OIDC back-channel logout token to clients that registered for it', async () => {
    const { agent, config, tokens } = await connectedAgent();
    const logoutUri = new URL('/logout', receiver.url).href;
    const updated = await server.cli(['clients', 'update', agent.clientId, '--backchannel-logout-uri', logoutUri]);
    assert.equal(updated.code, 0, updated.stderr);
    await client.tokenRevocation(config, tokens.refresh_token!);
    const logout = await waitFor('the logout token', () => receiver.logouts.find((l) => decode(l).claims.aud === agent.clientId));
    const { claims } = decode(logout);
    assert.equal(claims.sub, user.id);
    assert.ok((claims.events as Record<string, unknown>)['http://schemas.openid.net/event/backchannel-logout']);
    assert.ok(await verifiesWithJwks(server.issuer, logout));
  });

  it('pushes an event to a resource server that subscribed, for grants that reached it', async () => {
    const api = 'https://inbox-api.example.com/';
    const made = await server.cli(['resources', 'create', api, '--scopes', 'inbox:read', '--event-uri', receiver.url]);
    assert.equal(made.code, 0, made.stderr);
    const agent = await createAgent(server, { redirectUris: [REDIRECT_URI], scope: 'inbox:read' });
    const config = await clientFor(server, agent);
    const tokens = await codeFlowTokens(server.issuer, config, user, { scope: 'inbox:read', redirectUri: REDIRECT_URI, extra: { resource: api } });
    await client.tokenRevocation(config, tokens.refresh_token!);
    const toApi = await waitFor("the resource server's event", () => receiver.received.map((r) => decode(r.token)).find((e) => e.claims.aud === api));
    const body = (toApi.claims.events as Record<string, { client_id: string; sub: string }>)[EVENT]!;
    assert.equal(body.client_id, agent.clientId);
    assert.equal(body.sub, user.id);
  });

  it('issue 12: delivers to a receiver reached by host name over https, without ALLOW_PRIVATE_FETCH', async (t) => {
    const { agent, config, tokens } = await connectedAgent();
    const revoked = performance.now();
    await client.tokenRevocation(config, tokens.refresh_token!);
    const [event] = await waitFor('the event', () => (eventsFor(agent.clientId).length ? eventsFor(agent.clientId) : undefined));
    t.diagnostic(`delivered ${Math.round(performance.now() - revoked)} ms after the revoke`); // reported, never asserted
    assert.equal((event!.claims.events as Record<string, { reason: string }>)[EVENT]!.reason, 'token_revoked');
    assert.ok(await verifiesWithJwks(server.issuer, event!.token));
  });

  it('issue 12: never dials a receiver whose name resolves to a refused address, and events list says why', async () => {
    // A listener on a loopback address the name resolves to: it must never see a connection.
    const loopback = `127.${1 + (process.pid % 200)}.${Math.floor(Math.random() * 250)}.${2 + Math.floor(Math.random() * 250)}`;
    let connections = 0;
    const trap = net.createServer((socket) => {
      connections += 1;
      socket.destroy();
    });
    await new Promise<void>((resolve) => trap.listen(443, loopback, resolve));
    const refused = await createTestHost('refused', (_req, res) => res.writeHead(202).end(), { resolveTo: loopback });
    try {
      const agent = await createAgent(server, { redirectUris: [REDIRECT_URI], scope: 'inbox:read' });
      const set = await server.cli(['clients', 'update', agent.clientId, '--event-uri', `${refused.origin}/events`]);
      assert.equal(set.code, 0, set.stderr);
      const config = await clientFor(server, agent);
      const tokens = await codeFlowTokens(server.issuer, config, user, { scope: 'inbox:read', redirectUri: REDIRECT_URI });
      await client.tokenRevocation(config, tokens.refresh_token!);
      const row = await waitFor('a failed attempt', async () => {
        const listed = JSON.parse((await server.cli(['events', 'list', '--json'])).stdout).events as {
          client_id: string;
          attempts: number;
          last_error: string | null;
        }[];
        return listed.find((e) => e.client_id === agent.clientId && e.attempts > 0);
      });
      assert.match(
        row.last_error ?? '',
        new RegExp(`${refused.hostname.replaceAll('.', '\\.')} resolves to a refused address: ${loopback.replaceAll('.', '\\.')} is a loopback address`),
      );
      assert.equal(connections, 0);
      const text = (await server.cli(['events', 'list'])).stdout;
      assert.match(text, /loopback address/);
    } finally {
      await refused.close();
      trap.close();
    }
  });

  it('keeps retrying a receiver that is down, and delivers once it is back', async () => {
    const { agent, config, tokens } = await connectedAgent();
    receiver.setFailNext(2);
    await client.tokenRevocation(config, tokens.refresh_token!);
    await waitFor('delivery after two failures', () => (eventsFor(agent.clientId).length ? true : undefined), 20_000);
    assert.equal(receiver.failNext, 0, 'it was refused twice first');
    const row = await waitFor('the delivered state', async () => {
      const listed = JSON.parse((await server.cli(['events', 'list', '--json'])).stdout).events as { client_id: string; attempts: number; state: string }[];
      const found = listed.find((e) => e.client_id === agent.clientId);
      return found?.state === 'delivered' ? found : undefined;
    });
    assert.equal(row.attempts, 3);
    assert.equal(eventsFor(agent.clientId).length, 1, 'one event, delivered once');
  });
});

describe('revocation events survive kill -9', { skip: testHostsUnavailable }, () => {
  it('delivers an event queued before the server was killed, once it is back', async () => {
    const receiver = await startReceiver();
    const server = await startServer(testHostEnv());
    let restarted: Awaited<ReturnType<typeof spawnServer>> | undefined;
    try {
      await createScope(server, 'inbox:read', 'Read your inbox');
      const user = await createUser(server);
      const agent = await createAgent(server, { redirectUris: [REDIRECT_URI], scope: 'inbox:read', grantTypes: ['authorization_code', 'refresh_token'] });
      await server.cli(['clients', 'update', agent.clientId, '--event-uri', receiver.url]);
      const config = await clientFor(server, agent);
      const tokens = await codeFlowTokens(server.issuer, config, user, { scope: 'inbox:read', redirectUri: REDIRECT_URI });
      receiver.setFailNext(1_000_000); // down
      await client.tokenRevocation(config, tokens.refresh_token!);
      await new Promise((resolve) => setTimeout(resolve, 700));
      await server.halt('SIGKILL');
      receiver.setFailNext(0);
      restarted = await spawnServer(server.env);
      await waitFor('delivery after the restart', () => (receiver.received.length ? true : undefined), 20_000);
      assert.equal(new Set(receiver.received.map((r) => decode(r.token).claims.jti)).size, 1);
    } finally {
      if (restarted) await stopProcess(restarted.child, 'SIGKILL');
      await server.stop();
      await receiver.close();
    }
  });
});
