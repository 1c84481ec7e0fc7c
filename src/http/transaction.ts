/**
 * One Postgres transaction per request, begun at the first query and committed before the
 * response is sent: a 200 always means its writes are durable. A refused request (4xx, 5xx)
 * rolls back, so a refusal writes nothing; the few writes that must survive one say so: a reuse
 * tombstone and its audit row with `db.mustCommit()`, a spent assertion jti with
 * `db.keepOnRollback()` (docs/architecture.md).
 */
import type { Context, Next } from 'koa';
import { CommitFailedError, type Db } from '../storage/db.ts';
import { requestContext } from './request-context.ts';

export function requestTransaction(db: Db) {
  return async function inTransaction(ctx: Context, next: Next): Promise<void> {
    try {
      await db.unitOfWork(
        async () => {
          await next();
          return ctx.status;
        },
        (status) => status < 400,
      );
    } catch (err) {
      if (!(err instanceof CommitFailedError)) throw err;
      requestContext()?.log.error({ err: err.cause }, 'commit failed');
      ctx.remove('Location');
      ctx.status = 503;
      ctx.set('Retry-After', '1');
      ctx.body = { error: 'temporarily_unavailable', error_description: 'the request could not be completed; try again' };
    }
  };
}
