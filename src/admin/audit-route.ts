/**
 * GET /admin/audit?since=&user=&client=&after=&limit=: the audit export over HTTP as JSON lines,
 * for collectors, a page at a time (default 1,000 events, at most 10,000) after the cursor
 * `after` (an event id). A full page carries `Link: <…?after=<last id>…>; rel="next"`; the last
 * page has none. Behind an admin token (src/admin/tokens.ts); without one configured the route does
 * not exist (404).
 */
import type { Context, Next } from 'koa';
import { z } from 'zod';
import { findAccountByUsername } from '../users/store.ts';
import { AgentauthError, InvalidRequest } from '../errors.ts';
import { nameRoute } from '../metrics/http.ts';
import type { Db } from '../storage/db.ts';
import type { AuditLog } from '../audit/log.ts';
import { MAX_AUDIT_PAGE } from '../audit/store.ts';

const querySchema = z.object({
  since: z.iso.datetime({ offset: true }).optional(),
  user: z.string().min(1).max(200).optional(),
  client: z.string().min(1).max(200).optional(),
  after: z.coerce.number().int().min(0).default(0),
  limit: z.coerce.number().int().min(1).max(MAX_AUDIT_PAGE).default(1000),
});

export function adminAuditRoute(db: Db, audit: AuditLog, adminTokenName: (authorization: string | undefined) => string | undefined, enabled: boolean) {
  return async function adminAudit(ctx: Context, next: Next): Promise<void> {
    if (!enabled || ctx.path !== '/admin/audit') return next();
    nameRoute(ctx, 'admin_audit');
    if (ctx.method !== 'GET') throw new AgentauthError(405, 'invalid_request', 'Use GET.');
    if (!adminTokenName(ctx.get('authorization') || undefined)) {
      ctx.set('WWW-Authenticate', 'Bearer realm="agentauth-admin"');
      throw new AgentauthError(401, 'invalid_token', 'A valid admin token is required.');
    }
    const query = querySchema.safeParse(ctx.query);
    if (!query.success) throw new InvalidRequest(`Bad query: ${query.error.issues[0]!.path.join('.')}`);
    const { since, user, client, after, limit } = query.data;
    const accountId = user ? ((await findAccountByUsername(db, user))?.id ?? user) : undefined;
    const events = await audit.find({ since: since ? new Date(since) : undefined, accountId, clientId: client }, after, limit);
    if (events.length === limit) {
      const next = new URL(ctx.href);
      next.searchParams.set('after', String(events.at(-1)!.id));
      ctx.set('Link', `<${next.pathname}${next.search}>; rel="next"`);
    }
    ctx.type = 'application/x-ndjson';
    ctx.body = events.map((e) => `${JSON.stringify(e)}\n`).join('');
  };
}
