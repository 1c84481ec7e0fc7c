/**
 * A node:http API behind the resource-server helper, for bench/resource-server-helper.ts: run in
 * its own process so the load generator does not share its event loop. Prints its port.
 *   GET /open     no check (the ceiling)
 *   GET /jwt      JWT access token verified locally
 *   GET /opaque   opaque token, introspected at agentauth
 * Verified tokens are remembered for CACHE_SECONDS (0: checked on every request).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createResourceServer } from 'agentauth/resource-server';

const env = (name: string) =>
  process.env[name] ??
  (() => {
    throw new Error(`${name} is required`);
  })();
const jwt = createResourceServer({ issuer: env('ISSUER'), resource: env('JWT_RESOURCE'), cacheSeconds: Number(env('CACHE_SECONDS')) });
const opaque = createResourceServer({
  issuer: env('ISSUER'),
  resource: env('OPAQUE_RESOURCE'),
  cacheSeconds: Number(env('CACHE_SECONDS')),
  introspection: { clientId: env('INTROSPECTOR_ID'), privateKey: JSON.parse(env('INTROSPECTOR_JWK')) as Record<string, string> & { kty: string } },
});
const body = JSON.stringify({ ok: true });

const server = http.createServer(async (req, res) => {
  const rs = req.url === '/jwt' ? jwt : req.url === '/opaque' ? opaque : undefined;
  if (rs && !(await rs.authenticate(req, res, { scopes: ['bench:read'] }))) return;
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length }).end(body);
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
