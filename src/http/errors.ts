/**
 * One error type for our own routes and one middleware that renders it: an HTML page for
 * browsers, RFC 6749 JSON for everyone else. A 5xx is logged with its stack and never shown.
 */
import type { Context, Next } from 'koa';
import type { Views } from './views.ts';
import { isDependencyError } from './dependency-errors.ts';
import { requestContext } from './request-context.ts';

export class AppError extends Error {
  readonly status: number;
  readonly code: string;
  /** Whether the message may be shown to the caller. */
  readonly expose: boolean;
  constructor(status: number, code: string, message: string, expose = status < 500) {
    super(message);
    this.status = status;
    this.code = code;
    this.expose = expose;
  }
}

const HEADINGS: Record<number, string> = {
  400: 'That request did not work',
  403: 'That request was refused',
  404: 'Page not found',
  413: 'That request was too large',
  429: 'Please wait a moment',
  503: 'Service temporarily unavailable',
};

export function wantsHtml(ctx: Context): boolean {
  return ctx.accepts('json', 'html') === 'html';
}

export function renderErrorPage(ctx: Context, views: Views, status: number, code: string, message: string): void {
  ctx.status = status;
  if (wantsHtml(ctx)) {
    ctx.type = 'html';
    ctx.body = views.render('error', {
      heading: HEADINGS[status] ?? 'Something went wrong',
      message,
      code,
      requestId: requestContext()?.requestId,
    });
  } else {
    ctx.body = { error: code, error_description: message };
  }
}

export function errorHandler(views: Views) {
  return async function handleErrors(ctx: Context, next: Next): Promise<void> {
    try {
      await next();
    } catch (err) {
      if (err instanceof AppError && err.expose) {
        renderErrorPage(ctx, views, err.status, err.code, err.message);
        return;
      }
      const status = err instanceof AppError ? err.status : isDependencyError(err) ? 503 : 500;
      if (status === 503) ctx.set('Retry-After', '1');
      requestContext()?.log.error({ err }, 'request failed');
      renderErrorPage(
        ctx,
        views,
        status,
        status === 503 ? 'temporarily_unavailable' : 'server_error',
        status === 503 ? 'The service is temporarily unavailable; try again shortly.' : 'An unexpected error occurred.',
      );
    }
  };
}
