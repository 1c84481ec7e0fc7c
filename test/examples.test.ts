/**
 * The examples work as the README says: the notes API registers itself and introspects, the agent
 * registers itself, a user connects it through our pages, it calls the API, refreshes when its
 * token runs low, and forgets its tokens when the revocation event arrives (the API drops its
 * cache at the same moment). The MCP server example is exercised by mcp.test.ts. The examples
 * document a local development setup (agentauth with ALLOW_PRIVATE_FETCH=true, so it may post
 * events to the agent on http://127.0.0.1), and this test runs exactly that setup.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startAgentExample } from '../examples/agent/agent.ts';
import { startResourceServerExample } from '../examples/resource-server/server.ts';
import { authorize } from './helpers/browserless.ts';
import { createUser, type TestUser } from './helpers/factories.ts';
import { freePort, startServer, type TestServer } from './helpers/server.ts';
import { waitFor } from './helpers/wait.ts';

interface Status {
  connected: boolean;
  revoked: string | null;
  api: { status: number; body: { notes?: string[]; user?: string } | null };
}

describe('the examples', () => {
  let server: TestServer;
  let api: Awaited<ReturnType<typeof startResourceServerExample>>;
  let agent: Awaited<ReturnType<typeof startAgentExample>>;
  let user: TestUser;
  const apiLog: string[] = [];
  const agentLog: string[] = [];

  before(async () => {
    server = await startServer({ ALLOW_PRIVATE_FETCH: 'true' });
    user = await createUser(server);
    // Tokens that run low quickly, so the agent's refresh shows within the test.
    api = await startResourceServerExample({ issuer: server.issuer, port: 0, cli: server.cli, log: (l) => apiLog.push(l), accessTokenTtl: 30 });
    agent = await startAgentExample({
      issuer: server.issuer,
      resource: api.url,
      port: 0,
      cli: server.cli,
      log: (l) => agentLog.push(l),
      refreshBeforeSeconds: 28,
    });
  });
  after(async () => {
    await agent?.close();
    await api?.close();
    await server?.stop();
  });

  const status = async () => (await (await fetch(`${agent.url}status.json`)).json()) as Status;

  it('issue 12: the notes API answers 503 with Retry-After while it registers itself, then serves', async () => {
    let release!: () => void;
    const registering = new Promise<void>((resolve) => {
      release = resolve;
    });
    const port = await freePort();
    const starting = startResourceServerExample({
      issuer: server.issuer,
      port,
      cli: async (args) => {
        await registering;
        return server.cli(args);
      },
      log: () => {},
    });
    const early = await waitFor('the example to listen', () => fetch(`http://127.0.0.1:${port}/notes`).catch(() => undefined));
    assert.equal(early.status, 503);
    assert.equal(early.headers.get('retry-after'), '1');
    release();
    const started = await starting;
    try {
      assert.equal((await fetch(`${started.url}notes`)).status, 401);
    } finally {
      await started.close();
    }
  });

  it('connects the agent through login and consent, and it reads the notes API', async () => {
    const login = await fetch(`${agent.url}login`, { redirect: 'manual' });
    assert.equal(login.status, 302);
    const authorizationUrl = new URL(login.headers.get('location')!);
    assert.equal(authorizationUrl.searchParams.get('resource'), api.url);
    const { callback, consentScopes } = await authorize(server.issuer, authorizationUrl, user);
    assert.ok(consentScopes.length >= 2, "asks for the API's scopes");
    assert.equal((await fetch(callback, { redirect: 'manual' })).status, 303);
    const s = await status();
    assert.equal(s.connected, true);
    assert.equal(s.api.status, 200);
    assert.equal(s.api.body?.user, user.id);
    assert.ok(s.api.body?.notes?.includes('Welcome to your notes'));
  });

  it('refreshes when its access token runs low', async () => {
    await waitFor(
      'the token to run low',
      async () => {
        await status();
        return agentLog.some((l) => l.startsWith('refreshed')) ? true : undefined;
      },
      10_000,
    );
    assert.equal((await status()).api.status, 200);
  });

  it('forgets its tokens when agentauth pushes the revocation, and the API drops its cache', async () => {
    assert.equal((await server.cli(['clients', 'disable', agent.clientId])).code, 0);
    const s = await waitFor('the agent to hear of it', async () => {
      // Until the event arrives the agent may still try its dead token and answer 502: not yet.
      const current = await status().catch(() => undefined);
      if (!current) return undefined;
      return current.revoked ? current : undefined;
    });
    assert.equal(s.connected, false);
    assert.equal(s.revoked, 'client_disabled');
    await waitFor('the API to hear of it', () => (apiLog.some((l) => l.startsWith('revocation event')) ? true : undefined));
  });
});
