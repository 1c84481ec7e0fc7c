/**
 * GET /admin/audit?since=&user=&client=&after=&limit=: the audit export over HTTP as JSON lines,
 * for collectors, a page at a time (default 1,000 events, at most 10,000) after the cursor
 * `after` (an event id). A full page carries `Link: <…?after=<last id>…>; rel="next"`; the last
 * page has none. Behind `Authorization: Bearer $ADMIN_TOKEN`; without ADMIN_TOKEN the route does
 * not exist (404).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import { z } from 'zod';
import { findAccountByUsername } from '../accounts/store.ts';
import { AppError } from '../http/errors.ts';
import type { Db } from '../storage/db.ts';
import type { AuditLog } from './log.ts';
import { MAX_AUDIT_PAGE } from './store.ts';

const querySchema = z.object({
  since: z.iso.datetime({ offset: true }).optional(),
  user: z.string().min(1).max(200).optional(),
  client: z.string().min(1).max(200).optional(),
  after: z.coerce.number().int().min(0).default(0),
  limit: z.coerce.number().int().min(1).max(MAX_AUDIT_PAGE).default(1000),
});

const digest = (v: string) => createHash('sha256').update(v).digest();

export function adminAuditRoute(db: Db, audit: AuditLog, adminToken: string | undefined) {
  const expected = adminToken ? digest(adminToken) : undefined;
  return async function adminAudit(ctx: Context, next: Next): Promise<void> {
    if (ctx.path !== '/admin/audit' || !expected) return next();
    if (ctx.method !== 'GET') throw new AppError(405, 'invalid_request', 'Use GET.');
    const presented = /^Bearer (.+)$/.exec(ctx.get('authorization'))?.[1];
    // Compare digests so the comparison takes the same time whatever the presented length.
    if (!presented || !timingSafeEqual(digest(presented), expected)) {
      ctx.set('WWW-Authenticate', 'Bearer realm="agentauth-admin"');
      throw new AppError(401, 'invalid_token', 'A valid admin token is required.');
    }
    const query = querySchema.safeParse(ctx.query);
    if (!query.success) throw new AppError(400, 'invalid_request', `Bad query: ${query.error.issues[0]!.path.join('.')}`);
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
