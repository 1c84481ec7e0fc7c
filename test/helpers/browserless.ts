/**
 * Drives our login and consent pages over plain HTTP with a cookie jar, the way a browser
 * would, for flows that need no JavaScript. (The Chromium suite covers the real browser.)
 */
import assert from 'node:assert/strict';
import * as oidc from 'openid-client';
import type { TestUser } from './factories.ts';
import type { TestServer } from './server.ts';

export class CookieJar {
  readonly cookies = new Map<string, string>();

  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  absorb(res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      const expired = attrs.some((a) => /^\s*expires=Thu, 01 Jan 1970/i.test(a)) || value === '';
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }
}

export async function browse(jar: CookieJar, url: string | URL, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (jar.cookies.size) headers.set('cookie', jar.header());
  headers.set('accept', 'text/html');
  const res = await fetch(url, { ...init, headers, redirect: 'manual' });
  jar.absorb(res);
  return res;
}

export function postForm(jar: CookieJar, url: string | URL, form: Record<string, string | string[]>): Promise<Response> {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(form)) for (const item of [v].flat()) body.append(k, item);
  return browse(jar, url, { method: 'POST', body, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
}

/** Text of an HTML attribute or element as a browser reads it (the entities our templates write, and numeric ones). */
export const decodeHtml = (s: string) =>
  s
    .replace(/&#x([0-9a-f]+);/gi, (_m, h: string) => String.fromCodePoint(Number.parseInt(h, 16)))
    .replace(/&#(\d+);/g, (_m, d: string) => String.fromCodePoint(Number(d)))
    .replace(/&#39;/g, "'")
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');

export const csrfOf = (html: string): string => decodeHtml(/name="csrf" value="([^"]+)"/.exec(html)?.[1] ?? '');
export const scopesOnPage = (html: string): string[] => [...html.matchAll(/name="scope" value="([^"]+)"/g)].map((m) => decodeHtml(m[1]!));

/** Follows redirects on the AS until one leaves it; returns that response. */
export async function followOnIssuer(jar: CookieJar, issuer: string, res: Response): Promise<Response> {
  let current = res;
  for (let hops = 0; hops < 10; hops++) {
    const location = current.headers.get('location');
    if (!location || current.status < 300 || current.status >= 400) return current;
    const next = new URL(location, issuer);
    if (next.origin !== new URL(issuer).origin) return current;
    current = await browse(jar, next);
  }
  throw new Error('too many redirects');
}

export interface ConsentChoice {
  decision?: 'allow' | 'deny';
  /** Scopes to untick on the consent page. */
  untick?: string[];
}

export interface AuthorizeResult {
  /** The redirect back to the client (with code or error), if the flow got there. */
  callback: URL;
  consentScopes: string[];
  consentHtml: string;
}

/** Signs in and answers consent; returns where the AS finally sends the browser. */
export async function authorize(
  issuer: string,
  authorizationUrl: URL,
  user: TestUser,
  choice: ConsentChoice = {},
  jar = new CookieJar(),
): Promise<AuthorizeResult> {
  let res = await followOnIssuer(jar, issuer, await browse(jar, authorizationUrl));
  let consentScopes: string[] = [];
  let consentHtml = '';
  for (let step = 0; step < 4; step++) {
    const location = res.headers.get('location');
    if (location && new URL(location, issuer).origin !== new URL(issuer).origin) {
      return { callback: new URL(location), consentScopes, consentHtml };
    }
    if (res.status !== 200) throw new Error(`unexpected ${res.status} at ${res.url}: ${await res.text()}`);
    const html = await res.text();
    const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1];
    if (!action) throw new Error(`no form on page:\n${html}`);
    const target = new URL(decodeHtml(action), issuer);
    if (target.pathname.endsWith('/login')) {
      res = await postForm(jar, target, { csrf: csrfOf(html), username: user.username, password: user.password });
    } else {
      consentHtml = html;
      consentScopes = scopesOnPage(html);
      const keep = consentScopes.filter((s) => !(choice.untick ?? []).includes(s));
      res = await postForm(jar, target, { csrf: csrfOf(html), scope: keep, decision: choice.decision ?? 'allow' });
    }
    res = await followOnIssuer(jar, issuer, res);
  }
  throw new Error('authorization did not finish');
}

/** Opens the authorization URL in a fresh jar and returns the login page and its interaction uid. */
export async function openLoginPage(issuer: string, authorizationUrl: URL): Promise<{ jar: CookieJar; html: string; uid: string }> {
  const jar = new CookieJar();
  const res = await followOnIssuer(jar, issuer, await browse(jar, authorizationUrl));
  const html = await res.text();
  const uid = /\/interaction\/([^/]+)\/login/.exec(html)?.[1];
  if (!uid) throw new Error(`no login form:\n${html}`);
  return { jar, html, uid };
}

/** POSTs a form to the token endpoint without any client library, as an attacker would. */
export function postToken(issuer: string, params: Record<string, string> | URLSearchParams, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(params),
  });
}

/** RFC 6749 §5.2: the characters an error code may use (%x20-21 / %x23-5B / %x5D-7E). */
export const OAUTH_ERROR_CODE = /^[\x20-\x21\x23-\x5B\x5D-\x7E]+$/;

export interface TokenAnswer {
  status: number;
  /** The JSON body, or `{ unparsable: text }` when it is not JSON. */
  body: Record<string, unknown>;
  cacheControl: string | null;
  /** RFC 9449 §8: the nonce the server asks a DPoP proof to carry. */
  nonce: string | null;
}

/** postToken with a DPoP proof when given, its answer read. */
export async function tokenAnswer(issuer: string, params: Record<string, string>, proof?: string): Promise<TokenAnswer> {
  const res = await postToken(issuer, params, proof === undefined ? {} : { dpop: proof });
  const text = await res.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { unparsable: text };
  }
  return { status: res.status, body, cacheControl: res.headers.get('cache-control'), nonce: res.headers.get('dpop-nonce') };
}

/**
 * The whole authorization code flow with PKCE through our pages: builds the request, signs in
 * and consents as `user`, and redeems the code. What most tests need before the part they test.
 */
export async function codeFlowTokens(
  issuer: string,
  config: oidc.Configuration,
  user: TestUser,
  options: { scope: string; redirectUri?: string; choice?: ConsentChoice; extra?: Record<string, string> },
): Promise<oidc.TokenEndpointResponse> {
  const verifier = oidc.randomPKCECodeVerifier();
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: options.redirectUri ?? 'http://127.0.0.1/cb',
    scope: options.scope,
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    ...options.extra,
  });
  const { callback } = await authorize(issuer, url, user, options.choice);
  return oidc.authorizationCodeGrant(
    config,
    callback,
    { pkceCodeVerifier: verifier },
    options.extra?.resource ? { resource: options.extra.resource } : undefined,
  );
}

/** Opens /account and signs in through the ordinary login page; returns the jar and the page. */
export async function signInToAccount(server: Pick<TestServer, 'issuer'>, user: TestUser, jar = new CookieJar()): Promise<{ jar: CookieJar; html: string }> {
  let res = await followOnIssuer(jar, server.issuer, await browse(jar, `${server.issuer}/account`));
  let html = await res.text();
  const login = /action="(\/interaction\/[^"]+\/login)"/.exec(html)?.[1];
  if (login) {
    res = await followOnIssuer(
      jar,
      server.issuer,
      await postForm(jar, `${server.issuer}${login}`, { csrf: csrfOf(html), username: user.username, password: user.password }),
    );
    html = await res.text();
  }
  assert.equal(res.status, 200, html);
  assert.match(html, /Your connected agents/);
  return { jar, html };
}
