/**
 * An MCP client built with the official SDK (`@modelcontextprotocol/sdk`, its `auth()` flow inside
 * the Streamable HTTP transport) against the example MCP server, protected by the resource-server
 * helper: 401 → RFC 9728 discovery → agentauth's metadata → open registration (public client,
 * loopback redirect, no application_type) → PKCE + resource → our login and consent pages (driven
 * over HTTP) → tools called with the token → refresh without offline_access.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { startMcpExample } from '../examples/mcp-server/server.ts';
import { authorize } from './helpers/browserless.ts';
import { createUser, type TestUser } from './helpers/factories.ts';
import { connectMcp, mcpTransport, MemoryOAuthProvider, toolText } from './helpers/mcp-client.ts';
import { startServer, type TestServer } from './helpers/server.ts';

describe('an MCP client (official SDK) against agentauth and a helper-protected MCP server', () => {
  let server: TestServer;
  let mcp: Awaited<ReturnType<typeof startMcpExample>>;
  let user: TestUser;
  const provider = new MemoryOAuthProvider();

  before(async () => {
    server = await startServer({ OPEN_REGISTRATION: 'true' });
    user = await createUser(server);
    mcp = await startMcpExample({ issuer: server.issuer, port: 0, cli: server.cli });
  });
  after(async () => {
    await mcp?.close();
    await server?.stop();
  });

  const connect = () => connectMcp(mcp.url, provider);

  it('discovers, registers, authorizes with PKCE and resource, and calls a tool', async () => {
    const client = new Client({ name: 'agentauth-test', version: '1.0.0' });
    const transport = mcpTransport(mcp.url, provider);
    await assert.rejects(client.connect(transport), UnauthorizedError);

    assert.ok(provider.information?.client_id, 'registered through open registration');
    const url = provider.authorizationUrl!;
    assert.equal(`${url.origin}${url.pathname}`, `${server.issuer}/auth`);
    assert.equal(url.searchParams.get('resource'), mcp.url);
    assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(url.searchParams.get('scope'), 'notes:read', 'from the protected resource metadata');

    const { callback, consentHtml } = await authorize(server.issuer, url, user);
    assert.match(consentHtml, /Test MCP host/);
    assert.match(consentHtml, /Unverified/i, 'an openly registered client is flagged');
    const code = callback.searchParams.get('code');
    assert.ok(code, `redirected with a code: ${callback.href}`);
    assert.equal(callback.searchParams.get('iss'), server.issuer, 'RFC 9207');
    await transport.finishAuth(code);
    assert.ok(provider.stored?.access_token);
    assert.ok(provider.stored?.refresh_token, 'a refresh token without offline_access');
    assert.doesNotMatch(provider.stored?.scope ?? '', /offline_access/);

    const connected = await connect();
    const whoami = JSON.parse(await toolText(connected, 'whoami')) as { user: string; agent: string; scopes: string[] };
    assert.deepEqual(whoami, { user: user.id, agent: provider.information!.client_id, scopes: ['notes:read'] });
    assert.match(await toolText(connected, 'list_notes'), /Buy milk/);
    await connected.close();
  });

  it('refreshes, rotating the refresh token, when the access token stops working', async () => {
    const before = provider.stored!;
    provider.stored = { ...before, access_token: 'expired-or-revoked' };
    const client = await connect();
    assert.match(await toolText(client, 'list_notes'), /Buy milk/);
    await client.close();
    assert.notEqual(provider.stored.access_token, 'expired-or-revoked');
    assert.notEqual(provider.stored.refresh_token, before.refresh_token, 'rotated');
  });
});
