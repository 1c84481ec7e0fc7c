/**
 * An upstream OAuth provider for connected-accounts tests: a bare oidc-provider on a test host,
 * reached by name over https as a deployment reaches a real one, with a confidential client for
 * agentauth. The test sees every token it issues and decides its access-token lifetime.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import https from 'node:https';
import Provider from 'oidc-provider';
import { CookieJar } from './browserless.ts';
import { createTestHost, testCa, type TestHost } from './test-host.ts';

export interface Upstream {
  host: TestHost;
  provider: Provider;
  clientId: string;
  secret: string;
  /** Every access and refresh token value it issued, to look for where it must not be. */
  issued: string[];
  /** Refresh tokens it destroyed (revoked, or spent by rotation). */
  destroyed: string[];
  /** Successful refresh_token grants it answered. */
  refreshes(): number;
  /** The lifetime of the access tokens it issues from now on. */
  setAccessTokenTtl(seconds: number): void;
  /** Holds each token request until `release` is called (for a crash in the middle of one). */
  holdTokenRequests(): { arrived: Promise<void>; release(): void };
  /** Signs in and consents at its pages; returns the callback URL it sends the browser to. */
  approve(authorizationUrl: string, login: string): Promise<URL>;
  close(): Promise<void>;
}

/** Its pages as the user's browser sees them: over https, trusting the test CA. */
function browse(jar: CookieJar, url: string, form?: Record<string, string>): Promise<{ status: number; location?: string; html: string }> {
  const ca = readFileSync(testCa().certFile);
  const body = form && new URLSearchParams(form).toString();
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: form ? 'POST' : 'GET',
        ca,
        headers: {
          accept: 'text/html',
          ...(jar.cookies.size ? { cookie: jar.header() } : {}),
          ...(body ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } : {}),
        },
      },
      (res) => {
        for (const line of res.headers['set-cookie'] ?? []) {
          const [pair] = line.split(';');
          const eq = pair!.indexOf('=');
          jar.cookies.set(pair!.slice(0, eq).trim(), pair!.slice(eq + 1).trim());
        }
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, location: res.headers.location, html: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

export async function startUpstream(redirectUris: string[]): Promise<Upstream> {
  let handler: http.RequestListener = (_req, res) => res.end();
  const host = await createTestHost('upstream', (req, res) => handler(req, res));
  const clientId = 'agentauth-vault';
  const secret = randomBytes(24).toString('base64url');
  let ttl = 3600;
  let refreshes = 0;
  let hold: { arrived: () => void; released: Promise<void> } | undefined;
  const provider = new Provider(host.origin, {
    clients: [
      {
        client_id: clientId,
        client_secret: secret,
        redirect_uris: redirectUris,
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    scopes: ['openid', 'offline_access', 'drive.read'],
    features: { revocation: { enabled: true }, devInteractions: { enabled: true } },
    issueRefreshToken: async () => true,
    rotateRefreshToken: true,
    ttl: { AccessToken: () => ttl },
    cookies: { keys: [randomBytes(16).toString('hex')] },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  });
  const issued: string[] = [];
  const destroyed: string[] = [];
  const events = provider as unknown as { on(event: string, listener: (...args: never[]) => void): void };
  for (const event of ['access_token.saved', 'refresh_token.saved']) events.on(event, (token: { jti: string }) => issued.push(token.jti));
  events.on('refresh_token.destroyed', (token: { jti: string }) => destroyed.push(token.jti));
  events.on('grant.success', (ctx: { oidc: { params?: { grant_type?: string } } }) => {
    if (ctx.oidc.params?.grant_type === 'refresh_token') refreshes += 1;
  });
  const app = provider.callback();
  handler = (req, res) => {
    if (hold && req.url?.startsWith('/token') && req.method === 'POST') {
      const { arrived, released } = hold;
      hold = undefined;
      arrived();
      void released.then(() => app(req, res));
      return;
    }
    app(req, res);
  };
  return {
    host,
    provider,
    clientId,
    secret,
    issued,
    destroyed,
    refreshes: () => refreshes,
    setAccessTokenTtl(seconds) {
      ttl = seconds;
    },
    holdTokenRequests() {
      let arrived!: () => void;
      let release!: () => void;
      const arrival = new Promise<void>((resolve) => {
        arrived = resolve;
      });
      hold = {
        arrived,
        released: new Promise<void>((resolve) => {
          release = resolve;
        }),
      };
      return { arrived: arrival, release };
    },
    async approve(authorizationUrl, login) {
      const jar = new CookieJar();
      let url = authorizationUrl;
      let form: Record<string, string> | undefined;
      for (let step = 0; step < 12; step += 1) {
        const res = await browse(jar, url, form);
        form = undefined;
        if (res.location) {
          const next = new URL(res.location, url);
          if (next.origin !== host.origin) return next;
          url = next.toString();
          continue;
        }
        assert.equal(res.status, 200, res.html);
        const action = /<form[^>]+action="([^"]+)"/.exec(res.html)?.[1];
        assert.ok(action, `a form on ${url}`);
        url = new URL(action.replaceAll('&amp;', '&'), url).toString();
        form = res.html.includes('name="login"') ? { prompt: 'login', login, password: 'any' } : { prompt: 'consent' };
      }
      throw new Error('the upstream never sent the browser back');
    },
    close: () => host.close(),
  };
}
