/**
 * Metrics over HTTP: the middleware that measures every request by endpoint, GET /metrics on the
 * main port (behind the admin bearer token), and the separate METRICS_PORT listener (no
 * credential: for a private scrape network).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Context, Next } from 'koa';
import { bearerOf } from '../http/authorization.ts';
import { providerRouteOf } from '../http/provider-route.ts';
import { SECURITY_HEADERS } from '../http/security-headers.ts';
import { countWithinRequest, metrics, renderMetrics } from './metrics.ts';

const OWN_ROUTE = Symbol('ownRoute');

/** Names one of our own non-router endpoints (health, static, admin) for the endpoint label. */
export function nameRoute(ctx: Context, name: string): void {
  (ctx.state as { [OWN_ROUTE]?: string })[OWN_ROUTE] = name;
}

/** A @koa/router pattern as a name: `/account/agents/:grantId/revoke` → `account_agents_revoke`. */
function routerPatternName(pattern: unknown): string | undefined {
  if (typeof pattern !== 'string') return undefined;
  const name = pattern
    .split('/')
    .filter((s) => s && !s.startsWith(':'))
    .join('_')
    .replace(/[^A-Za-z0-9_]/g, '_');
  return name || undefined;
}

/**
 * The endpoint label: our name, oidc-provider's route name, or our router's pattern; `other`
 * for anything else (404s included), so a scanner's paths never become series.
 */
function endpointOf(ctx: Context): string {
  return (
    (ctx.state as { [OWN_ROUTE]?: string })[OWN_ROUTE] ??
    providerRouteOf(ctx) ??
    routerPatternName((ctx as { _matchedRoute?: unknown })._matchedRoute) ??
    'other'
  );
}

/**
 * Mounted outside the error handler so it sees the final status. Counts made during the request
 * apply only if it did not end in a 5xx (see countWithinRequest). Never reads ctx.path, which
 * throws on a malformed request-target.
 */
export function measureRequests() {
  return async function measureRequest(ctx: Context, next: Next): Promise<void> {
    const started = performance.now();
    let status = 500; // what Koa answers for an error that escapes the error handler
    try {
      await countWithinRequest(
        async () => {
          await next();
        },
        () => ctx.status < 500,
      );
      status = ctx.status;
    } finally {
      metrics.request(endpointOf(ctx), status, (performance.now() - started) / 1000);
    }
  };
}

/** RFC 6750 §3: no error code when no credential was presented, invalid_token when a wrong one was. */
function refuse(ctx: Context, presented: boolean): void {
  ctx.status = 401;
  ctx.set('WWW-Authenticate', presented ? 'Bearer realm="agentauth-metrics", error="invalid_token"' : 'Bearer realm="agentauth-metrics"');
  ctx.body = { error: 'invalid_token', error_description: presented ? 'The bearer token is not valid.' : 'A bearer token is required.' };
}

/**
 * GET /metrics on the main port, behind an admin token (src/admin/tokens.ts: constant-time, any
 * named token). Without one (no admin token, or METRICS_PORT set) the endpoint does not exist here.
 */
export function metricsRoute(adminTokenName: ((authorization: string | undefined) => string | undefined) | undefined) {
  return async function metricsEndpoint(ctx: Context, next: Next): Promise<void> {
    if (!adminTokenName || ctx.path !== '/metrics' || (ctx.method !== 'GET' && ctx.method !== 'HEAD')) return next();
    nameRoute(ctx, 'metrics');
    const authorization = ctx.get('authorization') || undefined;
    if (!adminTokenName(authorization)) return refuse(ctx, bearerOf(authorization) !== undefined);
    const { contentType, body } = await renderMetrics();
    ctx.type = contentType;
    ctx.body = body;
  };
}

function answer(res: http.ServerResponse, status: number, contentType: string, body: string, head: boolean): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) });
  res.end(head ? undefined : body);
}

/** The METRICS_PORT listener: GET /metrics and nothing else, no credential. */
export async function serveMetrics(port: number, host: string): Promise<http.Server> {
  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    const head = req.method === 'HEAD';
    const path = (req.url ?? '').split('?')[0];
    if ((req.method !== 'GET' && !head) || path !== '/metrics') {
      answer(res, 404, 'application/json; charset=utf-8', JSON.stringify({ error: 'not_found', error_description: 'Only GET /metrics is served here.' }), head);
      return;
    }
    renderMetrics().then(
      ({ contentType, body }) => answer(res, 200, contentType, body, head),
      () =>
        answer(
          res,
          500,
          'application/json; charset=utf-8',
          JSON.stringify({ error: 'server_error', error_description: 'Metrics could not be collected.' }),
          head,
        ),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

export const portOf = (server: http.Server) => (server.address() as AddressInfo).port;
