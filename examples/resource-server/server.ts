/**
 * A notes API protected by agentauth: opaque access tokens, introspected by the helper as the
 * API's own client (private_key_jwt) and cached for 30 s, dropped at once when agentauth pushes a
 * revocation event. It takes DPoP-bound tokens only (RFC 9449): each call must prove the key the
 * token is bound to, so a leaked token is refused. On first start it registers its scopes, its
 * client and itself.
 *
 *   npm run example:resource-server          (agentauth running with ALLOW_PRIVATE_FETCH=true)
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createResourceServer } from 'agentauth/resource-server';
import { agentauth, ensureScope, exampleKey, jwksFile, listenWhileStarting, localCli, registeredClient, serve, type Cli } from '../setup.ts';

export interface ResourceServerExampleOptions {
  issuer: string;
  /** Defaults to 4200; 0 picks a free port. */
  port?: number;
  cli?: Cli;
  log?: (line: string) => void;
  /** Lifetime of the access tokens agentauth issues for this API (default: agentauth's, 10 minutes). */
  accessTokenTtl?: number;
}

export async function startResourceServerExample(options: ResourceServerExampleOptions): Promise<{ url: string; close(): Promise<void> }> {
  const cli = options.cli ?? localCli;
  const log = options.log ?? ((line: string) => console.log(line));
  const server = await listenWhileStarting(options.port ?? 4200, '127.0.0.1');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;

  try {
    return await registerAndServe(server, url, cli, log, options);
  } catch (error) {
    server.close();
    throw error;
  }
}

async function registerAndServe(server: http.Server, url: string, cli: Cli, log: (line: string) => void, options: ResourceServerExampleOptions) {
  // Registration: scopes, the client the API introspects as, and the API itself.
  // Shared with the MCP example, whose self-registered clients may request it.
  await ensureScope(cli, 'notes:read', 'Read your notes', { allowUnverified: true });
  await ensureScope(cli, 'notes:write', 'Add to your notes');
  const key = exampleKey('resource-server');
  const clientId = await registeredClient(cli, 'resource-server', options.issuer, async () => {
    const made = await agentauth<{ client_id: string }>(cli, [
      'clients',
      'create',
      '--name',
      'Notes API (introspection)',
      '--grant-types',
      'client_credentials',
      '--jwks-file',
      jwksFile('resource-server', key),
    ]);
    return made.client_id;
  });
  const eventsPath = '/agentauth/events';
  if ((await cli(['resources', 'show', url])).code === 0) await agentauth(cli, ['resources', 'delete', url]);
  const ttl = options.accessTokenTtl ? ['--access-token-ttl', String(options.accessTokenTtl)] : [];
  await agentauth(cli, [
    'resources',
    'create',
    url,
    '--scopes',
    'notes:read notes:write',
    '--client',
    clientId,
    '--event-uri',
    new URL(eventsPath, url).href,
    ...ttl,
  ]);

  const rs = createResourceServer({
    issuer: options.issuer,
    resource: url,
    eventsPath,
    scopesSupported: ['notes:read', 'notes:write'],
    resourceName: 'Example notes API',
    introspection: { clientId, privateKey: key.privateJwk },
    // Bearer tokens refused; the RFC 9728 metadata says dpop_bound_access_tokens_required.
    dpop: { required: true },
    onRevocation: (event, dropped) =>
      log(`revocation event: grant ${event.grantId} of ${event.clientId} (${event.reason}); ${dropped} cached token(s) dropped`),
  });
  const notes = new Map<string, string[]>();

  serve(server, async (req, res) => {
    if (await rs.handle(req, res)) return;
    const path = URL.parse(req.url ?? '/', url)?.pathname;
    if (path !== '/notes') return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not_found"}');
    const writing = req.method === 'POST';
    const token = await rs.authenticate(req, res, { scopes: [writing ? 'notes:write' : 'notes:read'] });
    if (!token) return;
    // Notes belong to the user the agent acts for.
    const mine = notes.get(token.subject ?? token.clientId) ?? ['Welcome to your notes'];
    notes.set(token.subject ?? token.clientId, mine);
    if (writing) {
      let body = '';
      for await (const chunk of req) body += chunk;
      mine.push(body.slice(0, 500) || '(empty)');
    }
    log(`${req.method} /notes by agent ${token.clientId} for user ${token.subject ?? '-'}`);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ user: token.subject, agent: token.clientId, notes: mine }));
  });
  log(`notes API at ${url} (resource ${url}, introspecting as ${clientId})`);
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

if (import.meta.main) {
  await startResourceServerExample({ issuer: process.env.AGENTAUTH_ISSUER ?? 'http://localhost:3000', port: Number(process.env.PORT ?? 4200) });
}
