/** Reads an urlencoded form body for our own pages, within a small limit. */
import type { Context } from 'koa';
import { AppError } from './errors.ts';
import { containsNul, NUL_REFUSED } from '../storage/nul.ts';

const FORM_LIMIT_BYTES = 16 * 1024;

export async function readForm(ctx: Context): Promise<URLSearchParams> {
  if (!ctx.is('application/x-www-form-urlencoded')) {
    throw new AppError(415, 'invalid_request', 'The form must be sent as application/x-www-form-urlencoded.');
  }
  const declared = ctx.request.length;
  if (declared !== undefined && declared > FORM_LIMIT_BYTES) throw new AppError(413, 'invalid_request', 'The form is too large.');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > FORM_LIMIT_BYTES) throw new AppError(413, 'invalid_request', 'The form is too large.');
    chunks.push(chunk as Buffer);
  }
  const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
  if (containsNul([...form])) throw new AppError(400, 'invalid_request', NUL_REFUSED);
  return form;
}

/** 303 See Other: the browser follows with a GET and never re-posts the form (RFC 9700 §4.12). */
export function seeOther(ctx: Context, url: string): void {
  ctx.redirect(url);
  ctx.status = 303;
}
