/**
 * A bare oidc-provider (the version agentauth uses, its in-memory adapter): the library's own
 * ceiling for the benchmark. It has agentauth's features where they cost something per request
 * (ES256 signing, private_key_jwt with ES256 client keys and one-time jti, client_credentials,
 * authorization code with S256 PKCE, refresh tokens rotated on every use, introspection,
 * revocation, resource indicators with opaque and RFC 9068 JWT access tokens) and nothing of
 * its own: no database, no Redis, no audit, no rate limits.
 *
 * Storage is the library's MemoryAdapter over its LRU store, sized for the benchmark's data: the
 * default store keeps 1,000 entries, fewer than one scenario prepares, and evicts grants.
 *
 * Login and consent are a few routes answering forms, shaped like agentauth's pages so the same
 * HTTP driver runs the code flow on both; the password is checked with scrypt at agentauth's
 * parameters, because a real deployment pays that on every sign-in.
 *
 *   BENCH_BARE_CONFIG=<file.json> node bench/servers/bare-provider.ts
 */
import { scrypt, timingSafeEqual, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Context, Next } from 'koa';
import Provider, { errors } from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import LRU from 'oidc-provider/lib/helpers/lru.js';
import type { ClientMetadata, Configuration } from 'oidc-provider';
import { introspectionPolicy } from '../../src/oauth/provider.ts';

export interface BareProviderConfig {
  issuer: string;
  port: number;
  /** The ES256 signing key, a private JWK. */
  signingJwk: Record<string, unknown>;
  clients: ClientMetadata[];
  resources: { identifier: string; scopes: string[]; format: 'opaque' | 'jwt'; ttl: number; introspector: string }[];
  scopes: string[];
  user: { username: string; password: string };
}

/** agentauth's scrypt parameters (src/users/passwords.ts). */
const SCRYPT = { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const derive = (password: string, salt: Buffer) =>
  new Promise<Buffer>((resolve, reject) => {
    scrypt(password, salt, 32, SCRYPT, (err, key) => (err ? reject(err) : resolve(key)));
  });

const config = JSON.parse(readFileSync(process.env.BENCH_BARE_CONFIG!, 'utf8')) as BareProviderConfig;
const salt = randomBytes(16);
const passwordKey = await derive(config.user.password, salt);
const resources = new Map(config.resources.map((r) => [r.identifier, r]));
const store = new LRU({ maxSize: 10_000_000 });

const configuration: Configuration = {
  adapter: (model: string) => new MemoryAdapter(model, store),
  clients: config.clients,
  jwks: { keys: [config.signingJwk as never] },
  scopes: ['openid', ...config.scopes],
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  responseTypes: ['code'],
  pkce: { required: () => true },
  clientAuthMethods: ['private_key_jwt', 'none'],
  clientDefaults: {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'private_key_jwt',
    id_token_signed_response_alg: 'ES256',
  },
  enabledJWA: { clientAuthSigningAlgValues: ['ES256'], idTokenSigningAlgValues: ['ES256'] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: {
      enabled: true,
      // agentauth's rule: the token's own client, or the resource server it is meant for.
      allowedPolicy: introspectionPolicy(async (clientId, audiences) => audiences.some((a) => resources.get(a)?.introspector === clientId)),
    },
    dPoP: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        const rs = resources.get(resource);
        if (!rs) throw new errors.InvalidTarget('unknown resource server');
        return {
          scope: rs.scopes.join(' '),
          audience: rs.identifier,
          accessTokenTTL: rs.ttl,
          accessTokenFormat: rs.format,
          ...(rs.format === 'jwt' ? { jwt: { sign: { alg: 'ES256' as const } } } : {}),
        };
      },
    },
    rpInitiatedLogout: { enabled: false },
    userinfo: { enabled: false },
  },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  expiresWithSession: async () => false,
  rotateRefreshToken: true,
  ttl: { AccessToken: 600, ClientCredentials: 600, AuthorizationCode: 60, RefreshToken: 1_209_600, Grant: 7_776_000, Session: 86_400, Interaction: 3600 },
  interactions: { url: async (_ctx, interaction) => `/interaction/${interaction.uid}` },
};

const provider = new Provider(config.issuer, configuration);
provider.use(interactionRoutes);
const server = http.createServer(provider.callback());
server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`bare oidc-provider listening on ${(server.address() as AddressInfo).port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));

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

function missingScopes(details: Awaited<ReturnType<Provider['interactionDetails']>>): string[] {
  const missing = details.prompt.details.missingOIDCScope;
  return Array.isArray(missing) ? (missing as string[]) : [];
}

async function readBody(ctx: Context): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
