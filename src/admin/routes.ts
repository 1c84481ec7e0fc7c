/**
 * The admin HTTP API: everything the CLI does, as JSON over HTTP, running the same operations
 * (src/operations/operations.ts) with the same input schemas. One table below is both the router and
 * the OpenAPI 3.1 document (served at /admin/openapi.json), so the two cannot drift. Every route
 * needs `Authorization: Bearer <admin token>`; the token's name is the audit actor. Without a
 * configured admin token the API does not exist (404).
 *
 * Operations run in their own transaction (as from the CLI) and announce configuration changes
 * after they commit, so this router sits in front of the per-request transaction.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import { AgentauthError, NotFound } from '../errors.ts';
import { readJsonObject } from '../http/forms.ts';
import { runOperation, type OperationContext, type OperationName } from '../operations/operations.ts';
import { openApiDocument } from './openapi.ts';
import type { AdminToken } from '../config.ts';
import { adminTokenVerifier } from './tokens.ts';

type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';

interface Request {
  params: Record<string, string>;
  query: Record<string, string | undefined>;
  body: Record<string, unknown>;
}

export interface AdminRoute {
  method: Method;
  /** OpenAPI path template, e.g. /admin/clients/{clientId}. */
  path: string;
  operation: OperationName;
  summary: string;
  /** 201 for what creates something. */
  status?: 200 | 201;
  /** Query parameters the operation reads (documented as strings). */
  query?: string[];
  /** Whether a JSON body carries the operation's input. */
  body?: boolean;
  /** The operation's input from the request; default: the body with the path parameters over it. */
  input?(req: Request): unknown;
}

const flag = (v: string | undefined) => v === 'true' || v === '1';

export const ADMIN_ROUTES: AdminRoute[] = [
  { method: 'GET', path: '/admin/clients', operation: 'clients.list', summary: 'List clients' },
  { method: 'POST', path: '/admin/clients', operation: 'clients.create', summary: 'Register a client', status: 201, body: true },
  { method: 'GET', path: '/admin/clients/{clientId}', operation: 'clients.show', summary: 'Show a client' },
  {
    method: 'PATCH',
    path: '/admin/clients/{clientId}',
    operation: 'clients.update',
    summary: 'Change a client (the result must pass registration as a whole)',
    body: true,
  },
  { method: 'POST', path: '/admin/clients/{clientId}/disable', operation: 'clients.disable', summary: 'Disable a client and revoke every grant it holds' },
  { method: 'DELETE', path: '/admin/clients/{clientId}', operation: 'clients.delete', summary: 'Delete a client and revoke every grant it holds' },
  { method: 'POST', path: '/admin/users', operation: 'users.create', summary: 'Create a user', status: 201, body: true },
  { method: 'POST', path: '/admin/users/{username}/disable', operation: 'users.disable', summary: 'Disable a user' },
  { method: 'GET', path: '/admin/users/{username}/grants', operation: 'users.grants', summary: "A user's live grants (connected agents)" },
  { method: 'DELETE', path: '/admin/grants/{grantId}', operation: 'grants.revoke', summary: 'Revoke a grant: every token of it, with revocation events' },
  { method: 'GET', path: '/admin/scopes', operation: 'scopes.list', summary: 'List scopes' },
  { method: 'POST', path: '/admin/scopes', operation: 'scopes.create', summary: 'Create a scope, or change its description', body: true },
  { method: 'GET', path: '/admin/resources', operation: 'resources.list', summary: 'List resource servers' },
  { method: 'POST', path: '/admin/resources', operation: 'resources.create', summary: 'Register a resource server (RFC 8707)', status: 201, body: true },
  { method: 'GET', path: '/admin/resources/{identifier}', operation: 'resources.show', summary: 'Show a resource server (the identifier URL-encoded)' },
  { method: 'DELETE', path: '/admin/resources/{identifier}', operation: 'resources.delete', summary: 'Delete a resource server' },
  { method: 'GET', path: '/admin/connections', operation: 'connections.list', summary: 'List upstream connections (connected accounts)' },
  {
    method: 'POST',
    path: '/admin/connections',
    operation: 'connections.create',
    summary: 'Register an upstream provider users can connect; the client secret is stored sealed and never returned',
    status: 201,
    body: true,
  },
  { method: 'PATCH', path: '/admin/connections/{id}', operation: 'connections.update', summary: 'Set the agents that may use a connection', body: true },
  { method: 'DELETE', path: '/admin/connections/{id}', operation: 'connections.delete', summary: "Delete a connection and every user's tokens for it" },
  {
    method: 'POST',
    path: '/admin/registration-tokens',
    operation: 'registration-tokens.create',
    summary: 'An initial access token for RFC 7591 registration (shown once)',
    status: 201,
    body: true,
  },
  {
    method: 'GET',
    path: '/admin/events',
    operation: 'events.list',
    summary: 'Revocation events and their delivery state',
    query: ['pending'],
    input: (r) => ({ pending: flag(r.query.pending) }),
  },
  { method: 'POST', path: '/admin/audit/verify', operation: 'audit.verify', summary: "Check the audit trail's seals" },
  {
    method: 'POST',
    path: '/admin/audit/purge',
    operation: 'audit.purge',
    summary: 'Delete audit events sealed before a time; the rest still verifies',
    body: true,
  },
  {
    method: 'POST',
    path: '/admin/keys/rotate',
    operation: 'keys.rotate',
    summary: 'Publish a new signing key now; it signs after the propagation delay, the keys it replaces retire after the longest token lifetime',
    body: true,
  },
];

const koaPath = (template: string) => template.replace(/\{(\w+)\}/g, ':$1');

function authenticate(verify: (authorization: string | undefined) => string | undefined, ctx: Context): string {
  const name = verify(ctx.get('authorization') || undefined);
  if (name) return name;
  ctx.set('WWW-Authenticate', 'Bearer realm="agentauth-admin"');
  throw new AgentauthError(401, 'invalid_token', 'A valid admin token is required.');
}

/** Runs one route's operation as the token's named actor; its refusals carry their own status. */
async function handle(ops: OperationContext, route: AdminRoute, ctx: Context, actorName: string): Promise<void> {
  const params = (ctx as Context & { params: Record<string, string> }).params;
  const query = Object.fromEntries(Object.entries(ctx.query).map(([k, v]) => [k, Array.isArray(v) ? v[0] : v]));
  const body = route.body ? await readJsonObject(ctx) : {};
  const input = route.input ? route.input({ params, query, body }) : { ...body, ...params };
  ctx.body = await runOperation({ ...ops, actor: { type: 'admin', id: actorName } }, route.operation, input);
  ctx.status = route.status ?? 200;
}

/** Template → matcher for the fallback's Allow header. */
const ROUTE_PATTERNS = ADMIN_ROUTES.map((r) => ({ method: r.method, pattern: new RegExp(`^${r.path.replace(/\{\w+\}/g, '[^/]+')}$`) }));

/** Any other /admin/ request: 405 with Allow when the path exists, else 404; JSON either way. */
export function adminFallback(enabled: boolean) {
  return async function adminNotFound(ctx: Context, next: () => Promise<void>): Promise<void> {
    if (!enabled || !ctx.path.startsWith('/admin/')) return next();
    const allowed = ROUTE_PATTERNS.filter((r) => r.pattern.test(ctx.path)).map((r) => r.method);
    if (allowed.length === 0) throw new NotFound('No such admin API route; see /admin/openapi.json.');
    ctx.set('Allow', [...new Set(allowed)].join(', '));
    throw new AgentauthError(405, 'invalid_request', `Use ${[...new Set(allowed)].join(' or ')}.`);
  };
}

export function adminApi(ops: OperationContext, tokens: readonly AdminToken[]) {
  const router = new Router();
  if (tokens.length === 0) return router; // no admin token: the API does not exist
  const verify = adminTokenVerifier(tokens);
  const document = openApiDocument(ADMIN_ROUTES);
  router.get('/admin/openapi.json', (ctx) => {
    authenticate(verify, ctx);
    ctx.body = document;
  });
  for (const route of ADMIN_ROUTES) {
    const method = route.method.toLowerCase() as 'get' | 'post' | 'patch' | 'delete';
    router[method](koaPath(route.path), async (ctx) => handle(ops, route, ctx, authenticate(verify, ctx)));
  }
  return router;
}
