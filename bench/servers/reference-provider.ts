/**
 * What the benchmark's two reference servers share: oidc-provider (the version agentauth uses)
 * with agentauth's own protocol configuration (`baseConfiguration` from src/oauth/provider.ts,
 * at agentauth's default lifetimes), so it cannot drift from what agentauth runs, and nothing of
 * agentauth's own: no audit, no rate limits, no registration. They differ only in storage:
 * bare-provider.ts keeps everything in memory (the library's ceiling), plain-adapter-provider.ts
 * in one PostgreSQL table and Redis (the peer, as community adapters do it).
 *
 * Login and consent are a few routes answering forms, shaped like agentauth's pages so the same
 * HTTP driver runs the code flow on all of them; the password is checked with scrypt at
 * agentauth's parameters, because a real deployment pays that on every sign-in.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Context, Next } from 'koa';
import Provider from 'oidc-provider';
import type { ClientMetadata } from 'oidc-provider';
import { loadConfig } from '../../src/config.ts';
import type { AdapterConstructor } from '../../src/oauth/oidc-adapter.ts';
import { baseConfiguration } from '../../src/oauth/provider.ts';
import type { ResourceServer } from '../../src/resource-servers/store.ts';

export interface ReferenceProviderConfig {
  issuer: string;
  port: number;
  /** The ES256 signing key, a private JWK. */
  signingJwk: Record<string, unknown>;
  clients: ClientMetadata[];
  resources: ResourceServer[];
  scopes: string[];
  user: { username: string; password: string };
  /** The peer only: where it stores what it stores. */
  databaseUrl?: string;
  redisUrl?: string;
  redisKeyPrefix?: string;
}

/** agentauth's scrypt parameters (src/users/passwords.ts). */
const SCRYPT = { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const derive = (password: string, salt: Buffer) =>
  new Promise<Buffer>((resolve, reject) => {
    scrypt(password, salt, 32, SCRYPT, (err, key) => (err ? reject(err) : resolve(key)));
  });

export const readReferenceConfig = (): ReferenceProviderConfig =>
  JSON.parse(readFileSync(process.env.BENCH_REFERENCE_CONFIG!, 'utf8')) as ReferenceProviderConfig;

/**
 * Builds and serves the provider. `staticClients`: the clients live in the configuration (the
 * in-memory ceiling); otherwise the adapter finds them (the peer stored them in its table).
 */
export async function serveReferenceProvider(
  label: string,
  config: ReferenceProviderConfig,
  adapter: AdapterConstructor,
  staticClients: boolean,
): Promise<http.Server> {
  const defaults = loadConfig({});
  const salt = randomBytes(16);
  const passwordKey = await derive(config.user.password, salt);
  const resources = new Map(config.resources.map((r) => [r.identifier, r]));
  const configuration = baseConfiguration({
    adapter,
    signingKeys: [config.signingJwk as never],
    cookieKeys: [randomBytes(32).toString('base64url')],
    scopes: ['openid', ...config.scopes],
    ttl: defaults.ttl,
    clientAuth: defaults.clientAuth,
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
    findResourceServer: async (identifier) => resources.get(identifier),
    introspectsFor: async (clientId, audiences) => audiences.some((a) => resources.get(a)?.introspectorClient === clientId),
  });
  if (staticClients) configuration.clients = config.clients;
  const provider = new Provider(config.issuer, configuration);

  /** GET /interaction/:uid renders a form; POST …/login and …/consent answer it with a 303. */
  async function interactionRoutes(ctx: Context, next: Next): Promise<void> {
    const match = /^\/interaction\/([^/]+)(?:\/(login|consent))?$/.exec(ctx.path);
    if (!match) return next();
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const uid = details.uid;
    if (ctx.method === 'GET' && !match[2]) {
      ctx.type = 'html';
      ctx.body =
        details.prompt.name === 'login'
          ? `<form method="post" action="/interaction/${uid}/login"><input name="csrf" value="-"><input name="username"><input name="password" type="password"></form>`
          : `<form method="post" action="/interaction/${uid}/consent"><input name="csrf" value="-">${missingScopes(details)
              .map((s) => `<input type="checkbox" name="scope" value="${s}" checked>`)
              .join('')}</form>`;
      return;
    }
    if (ctx.method !== 'POST') return next();
    const form = new URLSearchParams(await readBody(ctx));
    let result: Parameters<Provider['interactionResult']>[2];
    if (match[2] === 'login') {
      const ok = form.get('username') === config.user.username && timingSafeEqual(await derive(form.get('password') ?? '', salt), passwordKey);
      result = ok ? { login: { accountId: config.user.username } } : { error: 'access_denied' };
    } else {
      const grant = details.grantId
        ? (await provider.Grant.find(details.grantId))!
        : new provider.Grant({ accountId: details.session!.accountId, clientId: String(details.params.client_id) });
      const scopes = missingScopes(details);
      if (scopes.length) grant.addOIDCScope(scopes.join(' '));
      for (const [resource, list] of Object.entries((details.prompt.details.missingResourceScopes ?? {}) as Record<string, string[]>))
        grant.addResourceScope(resource, list.join(' '));
      result = { consent: { grantId: await grant.save() } };
    }
    const location = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    ctx.redirect(location);
    ctx.status = 303;
  }

  provider.use(interactionRoutes);
  const server = http.createServer(provider.callback());
  await new Promise<void>((resolve) => server.listen(config.port, '127.0.0.1', resolve));
  process.stdout.write(`${label} listening on ${(server.address() as AddressInfo).port}\n`);
  return server;
}

function missingScopes(details: Awaited<ReturnType<Provider['interactionDetails']>>): string[] {
  const missing = details.prompt.details.missingOIDCScope;
  return Array.isArray(missing) ? (missing as string[]) : [];
}

async function readBody(ctx: Context): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
