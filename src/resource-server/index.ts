/**
 * `agentauth/resource-server`: what an API needs to accept agentauth's access tokens.
 *
 *   const rs = createResourceServer({ issuer, resource: 'https://notes.example.com/', introspection: { clientId, privateKey } });
 *   http.createServer(async (req, res) => {
 *     if (await rs.handle(req, res)) return;                      // RFC 9728 metadata, revocation events
 *     const token = await rs.authenticate(req, res, { scopes: ['notes:read'] });
 *     if (!token) return;                                         // 400/401/403 already answered (RFC 6750)
 *     …
 *   });
 *
 * JWT access tokens (RFC 9068) are verified locally against agentauth's cached key set; opaque
 * ones are introspected (RFC 7662, private_key_jwt) and the answer cached briefly. Either way the
 * token must be meant for this resource (its audience) and carry the scopes asked for. A pushed
 * revocation event drops the grant's cached answers and refuses its tokens from then on.
 *
 * DPoP (RFC 9449): a token bound to a key (cnf.jkt) is accepted only as `Authorization: DPoP`
 * with a proof of that key for this method and URL (see dpop.ts); sent as Bearer it is refused.
 * `dpop: { required: true }` refuses Bearer tokens altogether and says so in the metadata.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRemoteJWKSet, errors as joseErrors, importJWK, jwtVerify, SignJWT, type JWK, type JWTVerifyGetKey, type CryptoKey, type KeyObject } from 'jose';
import { authorizationToken, BearerError, type ChallengeOptions } from './bearer.ts';
import { createDpopVerifier, DPOP_PROOF_ALGS, DpopProofError, type DpopOptions } from './dpop.ts';
import { createRevocationEventVerifier, EventError, type GrantRevoked } from './events.ts';
import { TokenCache } from './token-cache.ts';

export { authorizationToken, BearerError, bearerToken } from './bearer.ts';
export { createDpopVerifier, DPOP_PROOF_ALGS, DpopProofError, type DpopOptions } from './dpop.ts';
export { createRevocationEventVerifier, EventError, GRANT_REVOKED_EVENT, type GrantRevoked } from './events.ts';

/** A verified access token. Shaped so that it also serves as the MCP SDK's `AuthInfo` (`req.auth`). */
export interface AccessToken {
  token: string;
  clientId: string;
  scopes: string[];
  /** Epoch seconds. */
  expiresAt: number;
  resource: URL;
  /** The user the agent acts for; absent for a client_credentials token. */
  subject: string | undefined;
  grantId: string | undefined;
  /**
   * RFC 8693 delegation, read from the nested `act` claim: the agents that acted for the user,
   * the agent the user consented to first and `clientId` (the current actor) last. Empty for a
   * token that was not exchanged: "alice, via Reporting Agent, via Coding Agent" is
   * `subject: alice, delegationChain: [reporting, coding]`.
   */
  delegationChain: string[];
  /** Every claim of the JWT or member of the introspection answer. */
  claims: Record<string, unknown>;
  /** The thumbprint of the DPoP key the token is bound to (cnf.jkt), if it is. */
  dpopJkt: string | undefined;
  extra: { subject: string | undefined; grantId: string | undefined };
}

export interface IntrospectionCredentials {
  /** The client the resource server was registered with (`agentauth resources create --client`). */
  clientId: string;
  /** Its private key, a JWK or a KeyObject; the matching public key is in the client's jwks. */
  privateKey: JWK | KeyObject | CryptoKey;
  alg?: 'ES256' | 'EdDSA' | 'PS256';
  kid?: string;
}

export interface ResourceServerOptions {
  /** agentauth's issuer URL. */
  issuer: string;
  /** This API's identifier, exactly as registered (`agentauth resources create <identifier>`). */
  resource: string;
  /** Needed for opaque access tokens. */
  introspection?: IntrospectionCredentials;
  /** Published in the RFC 9728 metadata so clients know what to ask for. */
  scopesSupported?: string[];
  resourceName?: string;
  resourceDocumentation?: string;
  /** Where revocation events are received (register it with `--event-uri`). Default /agentauth/events. */
  eventsPath?: string;
  /** How long a verified token (introspection answer or checked JWT) is reused, in seconds (default 30; 0 turns caching off). */
  cacheSeconds?: number;
  maxCacheEntries?: number;
  clockToleranceSeconds?: number;
  /** DPoP-bound tokens are always accepted (with their proof); here: require them, nonces, limits. */
  dpop?: DpopOptions;
  /**
   * The URL a request was sent to, as the client saw it (a proof's htu names it). Default: the
   * request's path on the resource identifier's origin; behind a proxy that rewrites paths, say so.
   */
  requestUrl?: (req: IncomingMessage) => URL;
  /** Called after a revocation event was applied. */
  onRevocation?: (event: GrantRevoked, droppedFromCache: number) => void;
}

/** What of an HTTP request a token check needs. */
export interface TokenRequest {
  authorization: string | string[] | undefined;
  /** The DPoP header(s). */
  dpop?: string | string[] | undefined;
  method: string;
  url: URL;
}

export interface AuthenticateOptions {
  /** Every one of these must have been granted. */
  scopes?: readonly string[];
}

interface ServerMetadata {
  issuer: string;
  jwks_uri: string;
  introspection_endpoint?: string;
}

const DEFAULT_EVENTS_PATH = '/agentauth/events';
const MAX_EVENT_BODY = 16 * 1024;

export type ResourceServer = ReturnType<typeof createResourceServer>;

export function createResourceServer(options: ResourceServerOptions) {
  const resource = new URL(options.resource);
  const issuer = options.issuer.replace(/\/$/, '');
  const metadataPath = protectedResourceMetadataPath(resource);
  const metadataUrl = new URL(metadataPath, resource.origin).href;
  const eventsPath = options.eventsPath ?? DEFAULT_EVENTS_PATH;
  const cacheMs = (options.cacheSeconds ?? 30) * 1000;
  const clockTolerance = options.clockToleranceSeconds ?? 5;
  // Remembered longer than any cached answer or JWT access token can live.
  const cache = new TokenCache<AccessToken>({ maxEntries: options.maxCacheEntries ?? 10_000, rememberRevokedSeconds: 24 * 3600 });
  const dpop = createDpopVerifier(options.dpop, clockTolerance);
  const dpopRequired = options.dpop?.required === true;
  const challengeOptions: ChallengeOptions = { dpopAlgs: DPOP_PROOF_ALGS, bearer: !dpopRequired };
  const requestUrl = options.requestUrl ?? ((req: IncomingMessage) => new URL(req.url ?? '/', resource.origin));

  const serverMetadata = memoize(async (): Promise<ServerMetadata> => {
    const res = await fetch(`${issuer}/.well-known/oauth-authorization-server`, { headers: { accept: 'application/json' }, redirect: 'error' });
    if (!res.ok) throw new Error(`agentauth metadata: HTTP ${res.status}`);
    const metadata = (await res.json()) as ServerMetadata;
    if (metadata.issuer !== options.issuer && metadata.issuer !== issuer) throw new Error(`agentauth metadata names issuer ${metadata.issuer}`);
    return metadata;
  });
  const keys = memoize(
    async (): Promise<JWTVerifyGetKey> =>
      createRemoteJWKSet(new URL((await serverMetadata()).jwks_uri), { cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000 }),
  );
  const verifyEvent = memoize(async () =>
    createRevocationEventVerifier({ issuer: (await serverMetadata()).issuer, audience: options.resource, keys: await keys() }),
  );

  /**
   * Verifies a Bearer token for this resource with the scopes asked for, or throws a BearerError.
   * A DPoP-bound token is refused here: it needs its proof (verifyRequest).
   */
  async function verify(token: string, required: readonly string[] = []): Promise<AccessToken> {
    return checkPresented('bearer', token, undefined, required);
  }

  /** Verifies the token of a request, Bearer or DPoP with its proof, or throws a BearerError. */
  async function verifyRequest(request: TokenRequest, required: readonly string[] = []): Promise<AccessToken> {
    const { scheme, token } = authorizationToken(request.authorization, required);
    return checkPresented(scheme, token, request, required);
  }

  async function checkPresented(
    scheme: 'bearer' | 'dpop',
    token: string,
    request: TokenRequest | undefined,
    required: readonly string[],
  ): Promise<AccessToken> {
    const refuse = (
      code: ConstructorParameters<typeof BearerError>[0],
      why: string,
      asScheme: BearerError['scheme'] = scheme === 'dpop' ? 'DPoP' : 'Bearer',
    ) => {
      const error = new BearerError(code, why, required);
      error.scheme = asScheme;
      return error;
    };
    if (scheme === 'bearer' && dpopRequired) throw refuse('invalid_token', 'this resource accepts DPoP-bound access tokens only (Authorization: DPoP)', 'DPoP');
    let verified: AccessToken;
    try {
      verified = await verifyToken(token, required);
    } catch (error) {
      if (error instanceof BearerError) error.scheme = scheme === 'dpop' ? 'DPoP' : 'Bearer';
      throw error;
    }
    if (scheme === 'bearer' && verified.dpopJkt) {
      // RFC 9449 §7.2: a bound token is useless without its key, whoever copied it.
      throw refuse('invalid_token', 'this access token is bound to a DPoP key: send it as Authorization: DPoP with a proof', 'DPoP');
    }
    if (scheme === 'dpop') {
      if (!verified.dpopJkt) throw refuse('invalid_token', 'this access token is not DPoP-bound: send it as Authorization: Bearer');
      let jkt: string;
      try {
        ({ jkt } = await dpop.check(request?.dpop, { method: request!.method, url: request!.url, accessToken: token }));
      } catch (error) {
        if (!(error instanceof DpopProofError)) throw error;
        const refused = refuse(error.code, error.message);
        refused.dpopNonce = error.nonce;
        throw refused;
      }
      if (jkt !== verified.dpopJkt) throw refuse('invalid_dpop_proof', 'the DPoP proof is signed with another key than the access token is bound to');
    }
    const missing = required.filter((s) => !verified.scopes.includes(s));
    if (missing.length > 0) throw refuse('insufficient_scope', `this request needs the scope ${missing.join(' ')}`);
    return verified;
  }

  /** The token itself: signature or introspection, audience, expiry, revocation (not scopes, not binding). */
  async function verifyToken(token: string, required: readonly string[]): Promise<AccessToken> {
    let verified = cache.get(token);
    if (!verified) {
      verified = looksLikeJwt(token) ? await verifyJwt(token, required) : await introspect(token, required);
      if (!verified) throw new BearerError('invalid_token', 'the access token is not active', required);
      // A JWT's signature check is the costly part of serving it (~7× node:http's time), so it is
      // remembered like an introspection answer; revocation events apply to both.
      if (cacheMs > 0) cache.set(token, { value: verified, grantId: verified.grantId, until: Math.min(Date.now() + cacheMs, verified.expiresAt * 1000) });
    }
    if (verified.expiresAt * 1000 <= Date.now() - clockTolerance * 1000) throw new BearerError('invalid_token', 'the access token has expired', required);
    if (cache.isRevoked(verified.grantId)) throw new BearerError('invalid_token', 'the access token was revoked', required);
    return verified;
  }

  async function verifyJwt(token: string, required: readonly string[]): Promise<AccessToken> {
    try {
      const { payload } = await jwtVerify(token, await keys(), {
        issuer: (await serverMetadata()).issuer,
        audience: options.resource,
        typ: 'at+jwt',
        algorithms: ['ES256'],
        clockTolerance,
        requiredClaims: ['exp', 'iat', 'client_id'],
      });
      return accessToken(token, payload as Record<string, unknown>, resource);
    } catch (error) {
      if (error instanceof BearerError) throw error;
      // agentauth's key set could not be fetched: say nothing about the token (503, not 401).
      if (error instanceof joseErrors.JWKSTimeout || error instanceof joseErrors.JWKSInvalid)
        throw new Error('agentauth key set unavailable', { cause: error });
      if (error instanceof joseErrors.JWTExpired) throw new BearerError('invalid_token', 'the access token has expired', required);
      if (error instanceof joseErrors.JWTClaimValidationFailed && error.claim === 'aud')
        throw new BearerError('invalid_token', 'the access token is meant for another resource', required);
      if (error instanceof joseErrors.JOSEError) throw new BearerError('invalid_token', 'the access token is not valid', required);
      throw error;
    }
  }

  async function introspect(token: string, required: readonly string[]): Promise<AccessToken | undefined> {
    const credentials = options.introspection;
    if (!credentials) throw new BearerError('invalid_token', 'this resource accepts JWT access tokens only', required);
    const metadata = await serverMetadata();
    if (!metadata.introspection_endpoint) throw new Error('agentauth offers no introspection endpoint');
    const body = new URLSearchParams({
      token,
      token_type_hint: 'access_token',
      client_id: credentials.clientId,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await clientAssertion(credentials, metadata.issuer),
    });
    const res = await fetch(metadata.introspection_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body,
      redirect: 'error',
    });
    if (!res.ok) throw new Error(`introspection: HTTP ${res.status}`);
    const answer = (await res.json()) as Record<string, unknown>;
    if (answer.active !== true) return undefined;
    const audiences = Array.isArray(answer.aud) ? answer.aud : [answer.aud];
    if (!audiences.includes(options.resource)) throw new BearerError('invalid_token', 'the access token is meant for another resource', required);
    return accessToken(token, answer, resource);
  }

  /** Applies one pushed revocation event (the raw SET); returns what it revoked, undefined for a repeat. */
  async function receiveEvent(set: string): Promise<GrantRevoked | undefined> {
    const event = await (await verifyEvent())(set.trim());
    if (!event) return undefined;
    const dropped = cache.revokeGrant(event.grantId);
    options.onRevocation?.(event, dropped);
    return event;
  }

  /** RFC 9728 protected resource metadata. */
  const metadata = () => ({
    resource: options.resource,
    authorization_servers: [issuer],
    bearer_methods_supported: ['header'],
    // RFC 9728 §2: the proof algorithms taken, and whether only DPoP-bound tokens are.
    dpop_signing_alg_values_supported: [...DPOP_PROOF_ALGS],
    ...(dpopRequired ? { dpop_bound_access_tokens_required: true } : {}),
    ...(options.scopesSupported ? { scopes_supported: options.scopesSupported } : {}),
    ...(options.resourceName ? { resource_name: options.resourceName } : {}),
    ...(options.resourceDocumentation ? { resource_documentation: options.resourceDocumentation } : {}),
  });

  /**
   * Checks the request's access token (Bearer, or DPoP with its proof); on refusal answers it
   * (RFC 6750, RFC 9449 §7.1) and returns undefined.
   */
  async function authenticate(req: IncomingMessage, res: ServerResponse, auth: AuthenticateOptions = {}): Promise<AccessToken | undefined> {
    const required = auth.scopes ?? [];
    try {
      const token = await verifyRequest(
        { authorization: req.headers.authorization, dpop: req.headers.dpop, method: req.method ?? 'GET', url: requestUrl(req) },
        required,
      );
      // A fresh nonce for the next proof, when this server asks for them (§9).
      const nonce = token.dpopJkt ? dpop.nextNonce() : undefined;
      if (nonce) res.setHeader('dpop-nonce', nonce);
      return token;
    } catch (error) {
      if (!(error instanceof BearerError)) {
        // agentauth unreachable or misconfigured: the token may be fine, so not a 401.
        sendJson(res, 503, { error: 'temporarily_unavailable', error_description: 'the authorization server could not be reached' }, { 'retry-after': '5' });
        return undefined;
      }
      sendJson(res, error.status, error.body(), {
        'www-authenticate': error.challenge(metadataUrl, challengeOptions),
        ...(error.dpopNonce ? { 'dpop-nonce': error.dpopNonce } : {}),
      });
      return undefined;
    }
  }

  /** Serves the metadata document and the events endpoint; true when it answered the request. */
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    // An unparseable request-target (e.g. "http://[") is not ours to answer; it must not throw.
    const path = URL.parse(req.url ?? '/', 'http://x')?.pathname;
    if (path === metadataPath) {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        sendJson(res, 405, { error: 'invalid_request', error_description: 'use GET' }, { allow: 'GET, HEAD' });
        return true;
      }
      // Public and static: browser-based clients may read it cross-origin.
      sendJson(res, 200, metadata(), { 'access-control-allow-origin': '*', 'cache-control': 'public, max-age=300' });
      return true;
    }
    if (path === eventsPath) {
      if (req.method !== 'POST') {
        sendJson(res, 405, { err: 'invalid_request', description: 'use POST' }, { allow: 'POST' });
        return true;
      }
      await answerEvent(req, res);
      return true;
    }
    return false;
  }

  async function answerEvent(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/secevent+jwt')
      return sendJson(res, 400, { err: 'invalid_request', description: 'Content-Type must be application/secevent+jwt' });
    const body = await readBody(req, MAX_EVENT_BODY);
    if (body === undefined) return sendJson(res, 413, { err: 'invalid_request', description: 'the event is too large' });
    try {
      await receiveEvent(body);
      res.writeHead(202).end();
    } catch (error) {
      if (error instanceof EventError) return sendJson(res, 400, error.body());
      sendJson(res, 503, { err: 'invalid_request', description: 'the event could not be checked now; send it again' }, { 'retry-after': '5' });
    }
  }

  /** Connect/Express-style middleware: sets `req.auth` (usable by the MCP SDK's transports). */
  const middleware =
    (auth: AuthenticateOptions = {}) =>
    (req: IncomingMessage & { auth?: AccessToken }, res: ServerResponse, next: (error?: unknown) => void) => {
      authenticate(req, res, auth).then((token) => {
        if (!token) return;
        req.auth = token;
        next();
      }, next);
    };

  return {
    verify,
    verifyRequest,
    authenticate,
    handle,
    middleware,
    receiveEvent,
    metadata,
    metadataPath,
    metadataUrl,
    eventsPath,
    cacheSize: () => cache.size,
  };
}

/** RFC 9728 §3.1: the well-known path is inserted between the host and the resource's path. */
export function protectedResourceMetadataPath(resource: URL): string {
  const path = resource.pathname === '/' ? '' : resource.pathname.replace(/\/$/, '');
  return `/.well-known/oauth-protected-resource${path}`;
}

function accessToken(token: string, claims: Record<string, unknown>, resource: URL): AccessToken {
  const text = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const clientId = text(claims.client_id);
  if (!clientId || typeof claims.exp !== 'number') throw new BearerError('invalid_token', 'the access token lacks client_id or exp');
  const subject = text(claims.sub);
  const grantId = text(claims.grant_id);
  const cnf = claims.cnf as { jkt?: unknown } | undefined;
  return {
    dpopJkt: text(cnf?.jkt),
    token,
    clientId,
    subject,
    grantId,
    claims,
    resource,
    scopes: (text(claims.scope) ?? '').split(' ').filter(Boolean),
    expiresAt: claims.exp,
    delegationChain: chainOfAct(claims.act),
    extra: { subject, grantId },
  };
}

/** The actors named by a nested `act` claim (RFC 8693 §4.1: the outermost is the current one), first one first. */
function chainOfAct(act: unknown): string[] {
  const chain: string[] = [];
  let current = act;
  for (let depth = 0; depth < 16 && current !== null && typeof current === 'object'; depth++) {
    const { sub, act: prior } = current as { sub?: unknown; act?: unknown };
    if (typeof sub !== 'string') return [];
    chain.unshift(sub);
    current = prior;
  }
  return chain;
}

const looksLikeJwt = (token: string) => token.split('.').length === 3;

async function clientAssertion(credentials: IntrospectionCredentials, audience: string): Promise<string> {
  const alg = credentials.alg ?? 'ES256';
  const key = isJwk(credentials.privateKey) ? await importJWK(credentials.privateKey, alg) : credentials.privateKey;
  const kid = credentials.kid ?? (isJwk(credentials.privateKey) ? credentials.privateKey.kid : undefined);
  return new SignJWT({})
    .setProtectedHeader({ alg, ...(kid ? { kid } : {}) })
    .setIssuer(credentials.clientId)
    .setSubject(credentials.clientId)
    .setAudience(audience)
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime('60s')
    .sign(key);
}

const isJwk = (key: unknown): key is JWK => typeof key === 'object' && key !== null && 'kty' in key;

/** Runs `load` once; a failure is forgotten so the next call tries again. */
function memoize<T>(load: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => {
    pending ??= load().catch((error: unknown) => {
      pending = undefined;
      throw error;
    });
    return pending;
  };
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** The request body as text, or undefined when it exceeds `limit` bytes. */
async function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
