/**
 * The one renderer of errors (src/errors.ts): an HTML page for browsers, RFC 6749 JSON for
 * everyone else, for our routes, the admin API and oidc-provider's own (its renderError). A
 * 5xx we did not mean is logged with its stack and never shown.
 */
import type { Context, Next } from 'koa';
import { errors } from 'oidc-provider';
import { AgentauthError, oauthErrorBody, TemporarilyUnavailable } from '../errors.ts';
import type { Views } from './views.ts';
import { isDependencyError } from './dependency-errors.ts';
import { requestContext } from './request-context.ts';

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

/**
 * Any thrown value as one of ours: our own as it is, oidc-provider's with its code and
 * description, an unreachable PostgreSQL or Redis as 503, anything else as a hidden 500.
 */
export function asAgentauthError(err: unknown): AgentauthError {
  if (err instanceof AgentauthError && err.expose) return err;
  if (isDependencyError(err)) return new TemporarilyUnavailable(undefined, { cause: err });
  if (err instanceof AgentauthError) return err;
  if (err instanceof errors.OIDCProviderError) {
    return new AgentauthError(err.status, err.error, err.error_description ?? 'The request could not be completed.', { expose: err.expose });
  }
  return new AgentauthError(500, 'server_error', 'An unexpected error occurred.', { expose: false, cause: err });
}

export function renderError(ctx: Context, views: Views, err: AgentauthError): void {
  ctx.status = err.status;
  if (err.retryAfter !== undefined) ctx.set('Retry-After', String(err.retryAfter));
  const body = oauthErrorBody(err);
  if (wantsHtml(ctx)) {
    ctx.type = 'html';
    ctx.body = views.render('error', {
      heading: HEADINGS[err.status] ?? 'Something went wrong',
      message: body.error_description,
      code: body.error,
      requestId: requestContext()?.requestId,
    });
  } else {
    ctx.body = body;
  }
}

export function errorHandler(views: Views) {
  return async function handleErrors(ctx: Context, next: Next): Promise<void> {
    try {
      await next();
    } catch (thrown) {
      const err = asAgentauthError(thrown);
      // Our own refusals are answers, not failures; anything else is logged with its stack.
      if (!(thrown instanceof AgentauthError && thrown.expose)) requestContext()?.log.error({ err: thrown }, 'request failed');
      renderError(ctx, views, err);
    }
  };
}
