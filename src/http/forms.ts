/**
 * Reads request bodies for our own routes: urlencoded forms for pages (with their CSRF check),
 * JSON for the admin API, within small limits.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { Context } from 'koa';
import { AgentauthError, Forbidden, InvalidRequest } from '../errors.ts';
import { containsNul, NUL_REFUSED } from '../storage/nul.ts';

const FORM_LIMIT_BYTES = 16 * 1024;
const JSON_LIMIT_BYTES = 256 * 1024;

async function readBody(ctx: Context, limit: number, what: string): Promise<string> {
  const declared = ctx.request.length;
  if (declared !== undefined && declared > limit) throw new AgentauthError(413, 'invalid_request', `The ${what} is too large.`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new AgentauthError(413, 'invalid_request', `The ${what} is too large.`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export async function readForm(ctx: Context): Promise<URLSearchParams> {
  if (!ctx.is('application/x-www-form-urlencoded')) {
    throw new AgentauthError(415, 'invalid_request', 'The form must be sent as application/x-www-form-urlencoded.');
  }
  const form = new URLSearchParams(await readBody(ctx, FORM_LIMIT_BYTES, 'form'));
  if (containsNul([...form])) throw new InvalidRequest(NUL_REFUSED);
  return form;
}

/** A JSON object body; an empty body is an empty object. */
export async function readJsonObject(ctx: Context): Promise<Record<string, unknown>> {
  const text = await readBody(ctx, JSON_LIMIT_BYTES, 'body');
  if (text.trim() === '') return {};
  if (!ctx.is('application/json')) throw new AgentauthError(415, 'invalid_request', 'The body must be sent as application/json.');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InvalidRequest('The body is not JSON.');
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new InvalidRequest('The body must be a JSON object.');
  if (containsNul(value)) throw new InvalidRequest(NUL_REFUSED);
  return value as Record<string, unknown>;
}

/**
 * Synchronizer tokens for every page's forms: an HMAC, under a key derived from the cookie keys,
 * of what the form is bound to (an interaction's uid, an account session's id), each of which is
 * itself bound to the browser by its cookie. A form posted from another site, or for another
 * interaction or session, fails.
 */
export interface FormGuard {
  /** The token a page puts in its form for `bindTo` (e.g. `interaction:<uid>`, `account:<session id>`). */
  tokenFor(bindTo: string): string;
  /** The form of a POST, refused (403) unless it carries the token for `bindTo` and is not cross-site. */
  checkedForm(ctx: Context, bindTo: string): Promise<URLSearchParams>;
}

export function createFormGuard(cookieKey: string): FormGuard {
  const key = Buffer.from(hkdfSync('sha256', cookieKey, 'agentauth', 'csrf-token', 32));
  const tokenFor = (bindTo: string) => createHmac('sha256', key).update(bindTo).digest('base64url');
  return {
    tokenFor,
    async checkedForm(ctx, bindTo) {
      // Fetch metadata first: a browser says when a form comes from another site.
      if (ctx.get('sec-fetch-site') === 'cross-site') throw new Forbidden('invalid_request', 'Cross-site form posts are refused.');
      const form = await readForm(ctx);
      const expected = Buffer.from(tokenFor(bindTo));
      const actual = Buffer.from(form.get('csrf') ?? '');
      if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) {
        throw new Forbidden('invalid_request', 'The form was missing its security token. Go back and try again.');
      }
      return form;
    },
  };
}

/** 303 See Other: the browser follows with a GET and never re-posts the form (RFC 9700 §4.12). */
export function seeOther(ctx: Context, url: string): void {
  ctx.redirect(url);
  ctx.status = 303;
}
