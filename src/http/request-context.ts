/** A request id and a child logger per request, reachable anywhere below through AsyncLocalStorage. */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import type { Context, Next } from 'koa';
import type { Logger } from 'pino';

export interface RequestContext {
  requestId: string;
  log: Logger;
  /** The client's address (from X-Forwarded-For only when TRUST_PROXY is set). */
  ip: string;
  userAgent: string;
  /**
   * Counts waiting for the request's answer (src/metrics/metrics.ts, countWithinRequest): kept
   * here rather than in an AsyncLocalStorage of their own, since every store adds its cost to
   * every promise the request creates.
   */
  deferredCounts?: { counts: (() => void)[]; ended: boolean };
}

const storage = new AsyncLocalStorage<RequestContext>();
const INCOMING_ID = /^[A-Za-z0-9._-]{8,64}$/;

export const requestContext = (): RequestContext | undefined => storage.getStore();

/**
 * The request's path, or undefined when its request-target cannot be parsed (`GET http://[`):
 * Koa's `ctx.path` throws then, and nothing may call it before `refuseMalformedTarget` ran.
 */
export function pathOf(ctx: Context): string | undefined {
  try {
    return ctx.path;
  } catch {
    return undefined;
  }
}

export function withRequestContext(log: Logger) {
  return async function requestScope(ctx: Context, next: Next): Promise<void> {
    const incoming = ctx.get('x-request-id');
    const requestId = INCOMING_ID.test(incoming) ? incoming : randomUUID();
    ctx.set('X-Request-Id', requestId);
    const started = performance.now();
    // The child logger is made when something logs: at LOG_LEVEL=warn most requests never do, and
    // a pino child (its bindings serialised, its redaction set up) is a sizeable part of the
    // per-request cost we add.
    let child: Logger | undefined;
    const context: RequestContext = {
      requestId,
      get log() {
        child ??= log.child({ requestId });
        return child;
      },
      ip: ctx.ip,
      userAgent: ctx.get('user-agent'),
    };
    try {
      await storage.run(context, next);
    } finally {
      // The path only: query strings can carry codes and state.
      if (log.isLevelEnabled('info')) {
        context.log.info(
          { method: ctx.method, path: pathOf(ctx) ?? '(malformed)', status: ctx.status, ms: Math.round(performance.now() - started) },
          'request',
        );
      }
    }
  };
}
