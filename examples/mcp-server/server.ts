/**
 * An MCP server (Streamable HTTP, stateless) whose tools need agentauth access tokens. The
 * resource-server helper answers 401 with the RFC 9728 metadata link, so an MCP client finds
 * agentauth, registers, and sends the user through login and consent on its own.
 *
 *   AGENTAUTH_ISSUER=http://localhost:3000 node examples/mcp-server/server.ts
 *
 * On start it registers itself with agentauth (scope notes:read, JWT access tokens), so MCP
 * clients need nothing but its URL: they register through open registration (OPEN_REGISTRATION).
 * It accepts Bearer tokens and DPoP-bound ones (RFC 9449, `Authorization: DPoP` with a proof), as
 * the helper does by default; a DPoP-bound token is never accepted as Bearer.
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createResourceServer, type AccessToken } from 'agentauth/resource-server';
import { agentauth, ensureScope, listenWhileStarting, localCli, serve, type Cli } from '../setup.ts';

export interface McpExampleOptions {
  issuer: string;
  /** Defaults to 4100; 0 picks a free port. */
  port?: number;
  host?: string;
  cli?: Cli;
}

const NOTES = ['Buy milk', 'Call the plumber', 'Water the plants'];

/** The tools, built per request: in stateless mode every request gets its own server and transport. */
function buildMcpServer(): McpServer {
  const server = new McpServer({ name: 'agentauth-example-notes', version: '1.0.0' });
  server.registerTool('whoami', { description: 'Who the agent acts for, and with which scopes' }, async (extra) => {
    const auth = extra.authInfo as AccessToken | undefined;
    return { content: [{ type: 'text', text: JSON.stringify({ user: auth?.subject, agent: auth?.clientId, scopes: auth?.scopes }) }] };
  });
  server.registerTool('list_notes', { description: "List the user's notes" }, async () => ({
    content: [{ type: 'text', text: NOTES.join('\n') }],
  }));
  return server;
}

export async function startMcpExample(options: McpExampleOptions): Promise<{ url: string; close(): Promise<void> }> {
  const host = options.host ?? '127.0.0.1';
  const server = await listenWhileStarting(options.port ?? 4100, host);
  const url = `http://${host}:${(server.address() as AddressInfo).port}/mcp`;
  const cli = options.cli ?? localCli;
  try {
    // MCP clients register themselves: the tool's low-risk read scope is opened to them.
    await ensureScope(cli, 'notes:read', 'Read your notes', { allowUnverified: true });
    if ((await cli(['resources', 'show', url])).code !== 0)
      await agentauth(cli, ['resources', 'create', url, '--scopes', 'notes:read', '--token-format', 'jwt']);
  } catch (error) {
    server.close();
    throw error;
  }
  const rs = createResourceServer({ issuer: options.issuer, resource: url, scopesSupported: ['notes:read'], resourceName: 'Example notes (MCP)' });

  serve(server, async (req: http.IncomingMessage & { auth?: AccessToken }, res) => {
    if (await rs.handle(req, res)) return;
    if (URL.parse(req.url ?? '/', url)?.pathname !== '/mcp') return void res.writeHead(404).end();
    const token = await rs.authenticate(req, res, { scopes: ['notes:read'] });
    if (!token) return;
    req.auth = token;
    const mcp = buildMcpServer();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on('close', () => void transport.close().then(() => mcp.close()));
    await mcp.connect(transport);
    await transport.handleRequest(req, res);
  });
  return {
    url,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

if (import.meta.main) {
  const issuer = process.env.AGENTAUTH_ISSUER ?? 'http://localhost:3000';
  const { url } = await startMcpExample({ issuer, port: Number(process.env.PORT ?? 4100) });
  console.log(`MCP server at ${url} (tokens from ${issuer})`);
}
