/**
 * Client ID Metadata Documents (CLIENT_ID_METADATA_DOCUMENTS=true): an MCP client whose client_id
 * is the https URL of its metadata completes the SDK's flow without registering; documents that
 * break the policy, lie about their client_id or redirect are refused with an error page (never a
 * redirect, never a 500); an admin can disable such a client.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { startMcpExample } from '../examples/mcp-server/server.ts';
import { authorize, postToken } from './helpers/browserless.ts';
import { createScope, createUser, type TestUser } from './helpers/factories.ts';
import { connectMcp, MCP_REDIRECT_URL, mcpTransport, MemoryOAuthProvider, toolText } from './helpers/mcp-client.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createTestHost, testHostEnv, testHostsUnavailable, type TestHost } from './helpers/test-host.ts';

describe('Client ID Metadata Documents', { skip: testHostsUnavailable }, () => {
  let server: TestServer;
  let documents: TestHost;
  let origin: string;
  let mcp: Awaited<ReturnType<typeof startMcpExample>>;
  let user: TestUser;
  const served: Record<string, () => { status: number; body: unknown; headers?: Record<string, string> }> = {};
  let fetches = 0;

  const publicClient = (id: string) => ({
    client_id: id,
    client_name: 'Document-described MCP host',
    redirect_uris: [MCP_REDIRECT_URL],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  });

  before(async () => {
    // The documents live on a test host, reached by name over https as in production.
    documents = await createTestHost('mcp-host', (req, res) => {
      fetches += 1;
      const answer = served[req.url ?? '']?.() ?? { status: 404, body: {} };
      res.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers }).end(JSON.stringify(answer.body));
    });
    origin = documents.origin;
    served['/mcp-host.json'] = () => ({ status: 200, body: publicClient(`${origin}/mcp-host.json`) });
    served['/confidential.json'] = () => ({
      status: 200,
      body: { ...publicClient(`${origin}/confidential.json`), token_endpoint_auth_method: 'private_key_jwt', jwks_uri: `${origin}/jwks` },
    });
    served['/liar.json'] = () => ({ status: 200, body: publicClient(`${origin}/mcp-host.json`) });
    served['/web-redirect.json'] = () => ({ status: 200, body: { ...publicClient(`${origin}/web-redirect.json`), redirect_uris: ['http://evil.example/cb'] } });
    served['/moved.json'] = () => ({ status: 302, body: {}, headers: { location: `${origin}/mcp-host.json` } });

    server = await startServer({ CLIENT_ID_METADATA_DOCUMENTS: 'true', ...testHostEnv() });
    user = await createUser(server);
    mcp = await startMcpExample({ issuer: server.issuer, port: 0, cli: server.cli });
  });
  after(async () => {
    await mcp?.close();
    await documents?.close();
    await server?.stop();
  });

  it('advertises support in the server metadata', async () => {
    const metadata = (await (await fetch(`${server.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    assert.equal(metadata.client_id_metadata_document_supported, true);
  });

  it('lets an MCP client (official SDK) use its document URL as client_id, without registering', async () => {
    const provider = new MemoryOAuthProvider(`${origin}/mcp-host.json`);
    const client = new Client({ name: 'agentauth-test', version: '1.0.0' });
    const transport = mcpTransport(mcp.url, provider);
    await assert.rejects(client.connect(transport), UnauthorizedError);
    assert.equal(provider.information?.client_id, `${origin}/mcp-host.json`);

    const { callback, consentHtml } = await authorize(server.issuer, provider.authorizationUrl!, user);
    assert.match(consentHtml, /Document-described MCP host/);
    assert.match(consentHtml, /Unverified/i);
    await transport.finishAuth(callback.searchParams.get('code')!);
    const connected = await connectMcp(mcp.url, provider);
    const whoami = JSON.parse(await toolText(connected, 'whoami')) as { user: string; agent: string };
    assert.deepEqual([whoami.user, whoami.agent], [user.id, `${origin}/mcp-host.json`]);
    await connected.close();

    const listed = JSON.parse((await server.cli(['clients', 'show', `${origin}/mcp-host.json`, '--json'])).stdout) as { registration: string };
    assert.equal(listed.registration, 'metadata_document');
  });

  const authorizationRequest = (clientId: string) => {
    const url = new URL(`${server.issuer}/auth`);
    url.search = new URLSearchParams({
      client_id: clientId,
      response_type: 'code',
      redirect_uri: MCP_REDIRECT_URL,
      scope: 'notes:read',
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      code_challenge_method: 'S256',
    }).toString();
    return fetch(url, { redirect: 'manual' });
  };

  it('refuses documents that break the policy, name another client_id, or redirect: an error page, never a redirect', async () => {
    for (const [document, why] of [
      ['/confidential.json', /public|none/],
      ['/liar.json', /client_id/],
      ['/web-redirect.json', /redirect|https/],
      ['/moved.json', /fetch/],
      ['/missing.json', /fetch/],
    ] as const) {
      const res = await authorizationRequest(`${origin}${document}`);
      assert.equal(res.status, 400, document);
      assert.match(await res.text(), why, document);
    }
  });

  it('issue-14: a document client may ask only for scopes opened to unverified clients', async () => {
    await createScope(server, 'admin:all', 'Administer everything');
    served['/look-alike.json'] = () => ({ status: 200, body: { ...publicClient(`${origin}/look-alike.json`), client_name: 'Agent A' } });
    const ask = async (scope: string) => {
      const url = new URL(`${server.issuer}/auth`);
      url.search = new URLSearchParams({
        client_id: `${origin}/look-alike.json`,
        response_type: 'code',
        redirect_uri: MCP_REDIRECT_URL,
        scope,
        code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
        code_challenge_method: 'S256',
      }).toString();
      return new URL((await fetch(url, { redirect: 'manual' })).headers.get('location') ?? '', server.issuer);
    };
    assert.equal((await ask('admin:all')).searchParams.get('error'), 'invalid_scope');
    assert.match((await ask('notes:read')).pathname, /^\/interaction\//);
  });

  it('issue-17: a document may say dpop_bound_access_tokens, and its code is then redeemed only with a DPoP proof', async () => {
    served['/bound.json'] = () => ({ status: 200, body: { ...publicClient(`${origin}/bound.json`), dpop_bound_access_tokens: true } });
    const verifier = randomBytes(32).toString('base64url');
    const url = new URL(`${server.issuer}/auth`);
    url.search = new URLSearchParams({
      client_id: `${origin}/bound.json`,
      response_type: 'code',
      redirect_uri: MCP_REDIRECT_URL,
      scope: 'notes:read',
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    }).toString();
    const { callback } = await authorize(server.issuer, url, user);
    const res = await postToken(server.issuer, {
      grant_type: 'authorization_code',
      code: callback.searchParams.get('code')!,
      redirect_uri: MCP_REDIRECT_URL,
      code_verifier: verifier,
      client_id: `${origin}/bound.json`,
    });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { error: string };
    assert.equal(body.error, 'invalid_dpop_proof', JSON.stringify(body));
  });

  it('refuses a disabled document client at once, cached document or not', async () => {
    const clientId = `${origin}/mcp-host.json`;
    assert.equal((await server.cli(['clients', 'disable', clientId])).code, 0);
    const res = await postToken(server.issuer, { grant_type: 'refresh_token', refresh_token: 'x', client_id: clientId });
    const body = (await res.json()) as { error: string };
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(body.error, 'invalid_client');
  });

  const auditOf = async (clientId: string) =>
    JSON.parse((await server.cli(['audit', 'export', '--client', clientId, '--json'])).stdout).events as {
      event_type: string;
      details: { changed?: string[] };
    }[];

  it('issue-13: concurrent first uses of one document all succeed, and register it once', async () => {
    const clientId = `${origin}/race.json`;
    served['/race.json'] = () => ({ status: 200, body: publicClient(clientId) });
    const answers = await Promise.all(Array.from({ length: 8 }, () => authorizationRequest(clientId)));
    for (const res of answers) {
      assert.equal(res.status, 303, await res.text());
      assert.match(res.headers.get('location') ?? '', /\/interaction\//);
    }
    assert.equal((await auditOf(clientId)).filter((e) => e.event_type === 'client.registered').length, 1);
  });

  it('issue-13: a changed document is stored, with a client.updated audit row', async () => {
    const clientId = `${origin}/changing.json`;
    let name = 'Before the change';
    served['/changing.json'] = () => ({ status: 200, body: { ...publicClient(clientId), client_name: name } });
    assert.equal((await authorizationRequest(clientId)).status, 303);
    name = 'After the change';
    // A configuration change rebuilds the provider, and with it the document cache.
    assert.equal((await server.cli(['scopes', 'create', `cimd:probe${Date.now()}`, '--description', 'Probe'])).code, 0);
    assert.equal((await authorizationRequest(clientId)).status, 303);
    const shown = JSON.parse((await server.cli(['clients', 'show', clientId, '--json'])).stdout) as {
      client_name?: string;
      metadata?: { client_name: string };
    };
    assert.equal(shown.client_name ?? shown.metadata?.client_name, 'After the change');
    const updated = (await auditOf(clientId)).filter((e) => e.event_type === 'client.updated');
    assert.equal(updated.length, 1);
    assert.deepEqual(updated[0]!.details.changed, ['client_name']);
  });

  it('fetches a document once per cache period, not per request', async () => {
    const before = fetches;
    for (let i = 0; i < 5; i++) await postToken(server.issuer, { grant_type: 'refresh_token', refresh_token: 'x', client_id: `${origin}/confidential.json` });
    assert.ok(fetches - before <= 1, `${fetches - before} fetches`);
  });
});
