/** Security headers on every response (RFC 9700 §4.16 clickjacking, §4.2.4 referrer leakage). */
import type { Context, Next } from 'koa';

// No script but one; only our own stylesheet; logos may come from https hosts.
// form-action is left out on purpose: Chromium applies it to the redirects that follow a form
// post, and consent must end in a redirect to the client's registered URI.
// script-src is spelled out (default-src says the same) so oidc-provider can add the hash of the
// one inline script it renders: form_post's auto-submit (OAuth 2.0 Form Post Response Mode).
const CSP = "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self' https:; frame-ancestors 'none'; base-uri 'none'";

/** 'none' beside a hash would be ignored anyway (CSP3 §2.3.1); drop it so the policy says what holds. */
const withHashOnly = (csp: string) => csp.replace(/script-src 'none' (?='sha256-)/, 'script-src ');

/** The headers every response carries (also those answered before the app is built). */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy': CSP,
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'X-Content-Type-Options': 'nosniff',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cache-Control': 'no-store',
};

export async function securityHeaders(ctx: Context, next: Next): Promise<void> {
  ctx.set({ ...SECURITY_HEADERS });
  if (ctx.secure) ctx.set('Strict-Transport-Security', 'max-age=31536000');
  await next();
  const csp = ctx.response.get('Content-Security-Policy');
  if (typeof csp === 'string' && csp.includes("'sha256-")) ctx.set('Content-Security-Policy', withHashOnly(csp));
}
