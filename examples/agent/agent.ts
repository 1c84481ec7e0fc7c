/**
 * An agent: a confidential client (private_key_jwt) that asks a user, through agentauth's login
 * and consent pages, for access to the example notes API; redeems the code with PKCE; calls the
 * API, refreshing (with rotation) when its access token runs out; and forgets everything the
 * moment agentauth pushes a signed event saying the user revoked it. Its tokens are DPoP-bound
 * (RFC 9449): every token request and API call carries a proof signed with a key that never leaves
 * this process, so a token copied out of a log or a prompt is useless to anyone else.
 *
 *   npm run example:agent      then open http://127.0.0.1:4300/
 */
import { randomBytes, type webcrypto } from 'node:crypto';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRemoteJWKSet } from 'jose';
import * as oidc from 'openid-client';
import { createRevocationEventVerifier, EventError } from 'agentauth/resource-server';
import { agentauth, exampleKey, jwksFile, listenWhileStarting, localCli, registeredClient, serve, type Cli } from '../setup.ts';

export interface AgentExampleOptions {
  issuer: string;
  /** The notes API's identifier (examples/resource-server), default http://127.0.0.1:4200/. */
  resource?: string;
  /** Defaults to 4300; 0 picks a free port. */
  port?: number;
  cli?: Cli;
  log?: (line: string) => void;
  /** Refresh when the access token has less than this many seconds left (default 15). */
  refreshBeforeSeconds?: number;
}

interface Session {
  tokens?: oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers;
  pending: Map<string, string>;
  revoked?: string;
}

export async function startAgentExample(options: AgentExampleOptions) {
  const cli = options.cli ?? localCli;
  const log = options.log ?? ((line: string) => console.log(line));
  const resource = options.resource ?? 'http://127.0.0.1:4200/';
  const server = await listenWhileStarting(options.port ?? 4300, '127.0.0.1');
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const redirectUri = `${base}/callback`;

  const key = exampleKey('agent');
  const registration = [
    '--redirect-uri',
    redirectUri,
    '--event-uri',
    `${base}/events`,
    '--scope',
    'notes:read notes:write',
    '--grant-types',
    'authorization_code,refresh_token',
  ];
  const clientId = await registeredClient(cli, 'agent', options.issuer, async () => {
    const made = await agentauth<{ client_id: string }>(cli, [
      'clients',
      'create',
      '--name',
      'Example notes agent',
      '--jwks-file',
      jwksFile('agent', key),
      ...registration,
    ]);
    return made.client_id;
  });
  await agentauth(cli, ['clients', 'update', clientId, ...registration]); // this run's port

  const privateKey = await crypto.subtle.importKey('jwk', key.privateJwk as webcrypto.JsonWebKey, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  const config = await oidc.discovery(new URL(options.issuer), clientId, undefined, oidc.PrivateKeyJwt({ key: privateKey, kid: key.privateJwk.kid }), {
    execute: new URL(options.issuer).protocol === 'http:' ? [oidc.allowInsecureRequests] : [],
  });
  const verifyEvent = createRevocationEventVerifier({
    issuer: config.serverMetadata().issuer,
    audience: clientId,
    keys: createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri!)),
  });
  const session: Session = { pending: new Map() };
  // The DPoP key: made at start, not extractable; a new process connects again with a new one.
  const dpopKey = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])) as oidc.CryptoKeyPair;
  const DPoP = oidc.getDPoPHandle(config, dpopKey);

  async function startLogin(res: http.ServerResponse): Promise<void> {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = randomBytes(16).toString('base64url');
    session.pending.set(state, verifier);
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: 'notes:read notes:write',
      resource,
      state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      // The code is bound to the key too (RFC 9449 §10): only this agent can redeem it.
      dpop_jkt: await DPoP.calculateThumbprint(),
    });
    res.writeHead(302, { location: url.href }).end();
  }

  async function finishLogin(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const current = new URL(req.url!, base);
    const state = current.searchParams.get('state') ?? '';
    const verifier = session.pending.get(state);
    session.pending.delete(state);
    if (!verifier) return void res.writeHead(400).end('unknown or used state');
    session.tokens = await oidc.authorizationCodeGrant(config, current, { pkceCodeVerifier: verifier, expectedState: state }, { resource }, { DPoP });
    session.revoked = undefined;
    log(`connected: scopes ${session.tokens.scope}, access token for ${session.tokens.expiresIn()} s`);
    res.writeHead(303, { location: '/' }).end();
  }

  async function refresh(): Promise<boolean> {
    if (!session.tokens?.refresh_token) return false;
    try {
      session.tokens = await oidc.refreshTokenGrant(config, session.tokens.refresh_token, { resource }, { DPoP });
      log('refreshed: new access token and a new (rotated) refresh token');
      return true;
    } catch (error) {
      log(`refresh refused (${(error as { error?: string }).error ?? error}); the user must connect again`);
      session.tokens = undefined;
      return false;
    }
  }

  /** Calls the notes API, refreshing once when the token is about to run out or is refused. */
  async function callApi(method: 'GET' | 'POST', body?: string): Promise<{ status: number; body: unknown }> {
    if (!session.tokens) return { status: 0, body: null };
    if ((session.tokens.expiresIn() ?? 0) < (options.refreshBeforeSeconds ?? 15)) await refresh();
    // Authorization: DPoP plus a fresh proof for this method and URL (openid-client makes both,
    // and answers an API's nonce challenge once by itself).
    const call = () =>
      oidc
        .fetchProtectedResource(config, session.tokens!.access_token, new URL('notes', resource), method, body, undefined, { DPoP })
        .catch((error: unknown) => {
          if (error instanceof oidc.WWWAuthenticateChallengeError) return error.response;
          throw error;
        });
    let res = await call();
    if (res.status === 401 && (await refresh())) res = await call();
    return { status: res.status, body: await res.json().catch(() => null) };
  }

  async function receiveEvent(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let set = '';
    for await (const chunk of req) set += chunk;
    try {
      const event = await verifyEvent(set.trim());
      if (event) {
        session.tokens = undefined;
        session.revoked = event.reason;
        log(`revocation event (${event.reason}): tokens forgotten`);
      }
      res.writeHead(202).end();
    } catch (error) {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify(error instanceof EventError ? error.body() : { err: 'invalid_request' }));
    }
  }

  serve(server, async (req, res) => {
    const path = URL.parse(req.url ?? '/', base)?.pathname;
    try {
      if (path === '/login') return await startLogin(res);
      if (path === '/callback') return await finishLogin(req, res);
      if (path === '/events' && req.method === 'POST') return await receiveEvent(req, res);
      if (path === '/note' && req.method === 'POST') {
        await callApi('POST', `Note from the agent at ${new Date().toISOString()}`);
        return void res.writeHead(303, { location: '/' }).end();
      }
      if (path === '/status.json') {
        const api = await callApi('GET');
        return void res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ connected: Boolean(session.tokens), revoked: session.revoked ?? null, api }));
      }
      if (path === '/') return void res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(await page());
      res.writeHead(404).end();
    } catch (error) {
      log(`error: ${(error as Error).message}`);
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end('the agent could not complete that; see its log');
    }
  });

  async function page(): Promise<string> {
    const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
    if (!session.tokens) {
      const why = session.revoked ? `<p>Access was revoked (${escapeHtml(session.revoked)}).</p>` : '';
      return `<!doctype html><title>Example agent</title><h1>Example notes agent</h1>${why}<p><a href="/login">Connect to your notes</a></p>`;
    }
    const api = await callApi('GET');
    const notes = ((api.body as { notes?: string[] } | null)?.notes ?? []).map((n) => `<li>${escapeHtml(n)}</li>`).join('');
    return `<!doctype html><title>Example agent</title><h1>Example notes agent</h1><p>Connected (API answered ${api.status}).</p><ul>${notes}</ul>
<form method="post" action="/note"><button>Add a note</button></form>`;
  }

  log(`agent at ${base}/ (client ${clientId}); open it to connect`);
  return {
    url: `${base}/`,
    clientId,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

if (import.meta.main) {
  await startAgentExample({
    issuer: process.env.AGENTAUTH_ISSUER ?? 'http://localhost:3000',
    resource: process.env.NOTES_API,
    port: Number(process.env.PORT ?? 4300),
  });
}
