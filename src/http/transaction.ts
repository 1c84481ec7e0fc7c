/**
 * One Postgres transaction per request, begun at the first query and committed before the
 * response is sent: a 200 always means its writes are durable. A refused request (4xx, 5xx)
 * rolls back, so a refusal writes nothing; the few writes that must survive one say so: a reuse
 * tombstone and its audit row with `db.mustCommit()`, a spent assertion jti with
 * `db.keepOnRollback()` (docs/architecture.md).
 */
import type { Context, Next } from 'koa';
import { CommitFailed } from '../errors.ts';
import type { Db } from '../storage/db.ts';
import { requestContext } from './request-context.ts';
import { renderError } from './errors.ts';
import type { Views } from './views.ts';

export function requestTransaction(db: Db, views: Views) {
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
      if (!(err instanceof CommitFailed)) throw err;
      requestContext()?.log.error({ err: err.cause }, 'commit failed');
      // What the handler answered did not happen: neither its redirect nor its body may go out.
      ctx.remove('Location');
      renderError(ctx, views, err);
    }
  };
}
