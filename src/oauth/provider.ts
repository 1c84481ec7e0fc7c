/**
 * Every oidc-provider setting lives here. Each non-default has a comment saying why: the spec
 * (OAuth 2.1, RFC 9700) or the attack it answers.
 */
import type { JsonWebKey } from '../keys/signing-keys.ts';
import { randomBytes } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';
import type { Client, Configuration, FindAccount, KoaContextWithOIDC } from 'oidc-provider';
import type { MetadataDocumentHooks } from '../clients/metadata-documents.ts';
import { LOOPBACK_HOSTS } from '../clients/policy.ts';
import { applyRegistrationDefaults } from '../clients/registration-defaults.ts';
import type { ClientMetadata } from '../clients/store.ts';
import type { ResourceServer } from '../resource-servers/store.ts';
import type { Outbound } from '../net/outbound.ts';
import type { AdapterConstructor } from './oidc-adapter.ts';
import type { cibaHooks } from '../approvals/ciba.ts';
import type { devicePages } from '../interactions/device.ts';
import { PASSWORD_ACR } from '../users/login.ts';
import { compileSchema, hasOneTimeDetail, parsedDetails, type DetailsType } from '../authorization-details/types.ts';
import { DPOP_ALGS, dpopFeature, installNonceRotation, requireDpopOfPublicClient, type DpopSettings } from './dpop.ts';

/**
 * What the protocol behaviour depends on: the part of agentauth's configuration that is pure
 * OAuth (grants, client authentication, tokens, resource indicators, introspection policy), with
 * no storage, registration, DPoP nonces or outbound fetching of its own. The benchmark's
 * reference servers (bench/servers/) are built on exactly this, so they cannot drift from what
 * agentauth runs.
 */
export interface BaseSettings {
  adapter: AdapterConstructor;
  signingKeys: JsonWebKey[];
  cookieKeys: string[];
  scopes: string[];
  ttl: { accessToken: number; refreshToken: number; refreshChain: number; authorizationCode: number; session: number };
  findAccount: FindAccount;
  clientAuth: { maxAssertionLifetime: number; allowRs256: boolean };
  /** The registered resource server for an RFC 8707 resource indicator, if any. */
  findResourceServer(identifier: string): Promise<ResourceServer | undefined>;
  /** Whether a client introspects for a resource server that is one of these audiences. */
  introspectsFor(clientId: string, audiences: string[]): Promise<boolean>;
  /** `act` and `may_act` of an access token (RFC 8693 delegation, src/delegation/claims.ts); none when absent. */
  delegationClaims?(token: object): Promise<Record<string, unknown> | undefined>;
  /** Authorization details types the product registered (RFC 9396); none for the bench's servers. */
  detailsTypes?: DetailsType[];
}

export interface ProviderSettings extends BaseSettings {
  issuer: string;
  trustProxy: boolean;
  renderError: NonNullable<Configuration['renderError']>;
  /** Every request the provider sends (jwks_uri, metadata documents, back-channel logout). */
  outbound: Outbound;
  /** Set when Client ID Metadata Documents are accepted (CLIENT_ID_METADATA_DOCUMENTS). */
  metadataDocuments?: MetadataDocumentHooks;
  /** DPoP (RFC 9449): nonce secrets and who must send proofs. */
  dpop: DpopSettings;
  delegationClaims(token: object): Promise<Record<string, unknown> | undefined>;
  /** Runs a wait on a remote host with no database connection held (Db.withoutConnection). */
  withoutConnection<T>(wait: () => Promise<T>): Promise<T>;
  detailsTypes: DetailsType[];
  /** CIBA's hooks: who login_hint names, and putting the request in front of the user (src/approvals). */
  ciba: ReturnType<typeof cibaHooks>;
  /** The device flow's pages (src/interactions/device.ts). */
  devicePages: ReturnType<typeof devicePages>;
}

/** A token for a one-time detail (a payment) is good for that one transaction: minutes, not hours. */
export const ONE_TIME_TOKEN_TTL_SECONDS = 120;

type RichAuthorizationRequests = NonNullable<NonNullable<Configuration['features']>['richAuthorizationRequests']>;

/**
 * RFC 9396 with the registered types: each detail's fields (every member but `type`) must satisfy
 * its type's JSON Schema, or the request is refused with invalid_authorization_details. What the
 * user approved is what the code, the token and introspection carry; nothing older in the grant.
 */
function richAuthorizationRequests(types: DetailsType[]): RichAuthorizationRequests {
  const validators = Object.fromEntries(
    types.map((type) => {
      const schema = compileSchema(type.schema);
      const validate = async (_ctx: KoaContextWithOIDC, detail: Record<string, unknown>) => {
        const { type: _name, ...fields } = detail;
        const checked = schema.safeParse(fields);
        if (!checked.success) {
          const issue = checked.error.issues[0]!;
          throw new errors.InvalidAuthorizationDetails(`${type.name}: ${issue.path.join('.') || 'detail'} ${issue.message}`);
        }
      };
      return [type.name, { validate }];
    }),
  );
  const configuration = {
    enabled: true,
    types: validators,
    // The code carries the details this request asked for and the user just approved (consent
    // is asked again for every request with details: oidc-provider's rar_prompt).
    authorizationDetailsForGrantSource: async (ctx: KoaContextWithOIDC) => parsedDetails(ctx.oidc.params?.authorization_details),
    // The token carries its grant source's details (code, CIBA request, device code, refresh
    // token), or those of a client credentials request.
    authorizationDetailsForAccessToken: async (ctx: KoaContextWithOIDC, _token: unknown, source: unknown) =>
      (source as { rar?: unknown } | undefined)?.rar ?? parsedDetails(ctx.oidc.params?.authorization_details),
    authorizationDetailsForIntrospection: async (_ctx: KoaContextWithOIDC, token: { rar?: unknown }) => token.rar,
  };
  return configuration as unknown as RichAuthorizationRequests;
}

/** The resource servers a request's authorization details are for (their types' registered resource). */
function resourcesOfDetails(raw: unknown, types: ReadonlyMap<string, DetailsType>): string[] {
  let details: unknown[] | undefined;
  try {
    details = parsedDetails(raw);
  } catch {
    return []; // oidc-provider refuses the unparsable parameter itself
  }
  return [...new Set((details ?? []).flatMap((d) => types.get(String((d as { type?: unknown }).type))?.resource ?? []))];
}

/** CIBA: an agent may ask for up to a day (requested_expiry); without asking, 15 minutes. */
const APPROVAL_DEFAULT_SECONDS = 15 * 60;
const APPROVAL_MAX_SECONDS = 24 * 3600;

/**
 * Algorithms a client may sign its assertion with: asymmetric only, never HMAC or none.
 * Ed25519 is the fully-specified name of EdDSA over Ed25519 (RFC 9864), which oauth4webapi uses.
 */
export const CLIENT_AUTH_ALGS = ['ES256', 'EdDSA', 'Ed25519', 'PS256'] as const;

export const clientAuthAlgs = (allowRs256: boolean): string[] => (allowRs256 ? [...CLIENT_AUTH_ALGS, 'RS256'] : [...CLIENT_AUTH_ALGS]);

/** typ values (lowercased, without application/) a client assertion may carry. */
const ASSERTION_TYPES = new Set(['jwt', 'client-authentication+jwt']);

/** How far in the future an assertion's iat may lie (client clock skew). */
const MAX_IAT_SKEW_SECONDS = 60;

/**
 * Checks on a client assertion beyond oidc-provider's (which verifies the signature with the
 * client's keys, requires exp, jti and iss = client_id, and records the jti once).
 */
function assertClientAssertion(maxLifetime: number): NonNullable<Configuration['assertJwtClientAuthClaimsAndHeader']> {
  return async (ctx, claims, header, client) => {
    // Audience injection (RFC 7523bis, FAPI 2.0): only the issuer, as a single string.
    if (typeof claims.aud !== 'string' || claims.aud !== ctx.oidc.issuer) {
      throw new errors.InvalidClientAuth('aud must be the issuer identifier, as a single string');
    }
    if (claims.sub !== client.clientId) throw new errors.InvalidClientAuth('sub must be the client_id');
    if (typeof claims.jti !== 'string' || claims.jti.length > 256) throw new errors.InvalidClientAuth('jti must be a string of at most 256 characters');
    // No extension this server understands may be marked critical (RFC 7515 §4.1.11).
    if (header.crit !== undefined) throw new errors.InvalidClientAuth('crit header parameters are not supported');
    // A JWT typed as another kind (an access token, a DPoP proof, an event) is not an assertion,
    // however it is signed (RFC 8725 §3.11); rfc7523bis names client-authentication+jwt.
    if (
      header.typ !== undefined &&
      !ASSERTION_TYPES.has(
        String(header.typ)
          .toLowerCase()
          .replace(/^application\//, ''),
      )
    ) {
      throw new errors.InvalidClientAuth('typ must be client-authentication+jwt or JWT, or be left out');
    }
    const now = Math.floor(Date.now() / 1000);
    const exp = Number(claims.exp);
    const iat = typeof claims.iat === 'number' ? claims.iat : now;
    if (iat > now + MAX_IAT_SKEW_SECONDS) throw new errors.InvalidClientAuth('iat is in the future');
    // A short lifetime bounds how long the jti must be remembered and how long a leak is useful.
    if (exp - iat > maxLifetime || exp - now > maxLifetime) {
      throw new errors.InvalidClientAuth(`the client assertion may be valid for at most ${maxLifetime} seconds`);
    }
  };
}

/**
 * MCP clients and other native apps often register loopback redirect URIs without saying
 * application_type, and OIDC's default (web) would then refuse them. A registration that omits it
 * and redirects only to http loopback addresses is a native app (RFC 8252 §7.3), so it is one.
 * (oidc-provider calls this once per extra property, before it checks the metadata.)
 */
const nativeWhenLoopbackOnly: NonNullable<NonNullable<Configuration['extraClientMetadata']>['validator']> = (ctx, key, _value, metadata) => {
  if (key !== 'event_delivery_uri') return;
  applyRegistrationDefaults(ctx, metadata);
  // A metadata document's client: its raw document is not at hand, so a declared "web" counts as unsaid.
  const fromDocument = typeof metadata.client_id === 'string' && metadata.client_id.startsWith('https://');
  const registering = ctx && ['registration', 'client_update'].includes(String(ctx.oidc?.route));
  if (
    fromDocument ? metadata.application_type !== 'web' : !registering || (ctx.oidc.body as Record<string, unknown> | undefined)?.application_type !== undefined
  )
    return;
  const uris = metadata.redirect_uris;
  const loopbackHttp = (uri: unknown) => {
    const url = typeof uri === 'string' ? URL.parse(uri) : null;
    return url?.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname);
  };
  if (Array.isArray(uris) && uris.length > 0 && uris.every(loopbackHttp)) metadata.application_type = 'native';
};

/**
 * RFC 6749 §3.3: without `scope`, the client's registered scope is the default (and is what the
 * consent page asks for); a client that registered none but names resource servers (RFC 8707, as
 * MCP clients do) asks for those servers' scopes; anything else is refused with invalid_scope now,
 * never after the user was asked. oidc-provider runs extra-parameter validators on every
 * authorization request after its own scope and resource checks, so the default is the client's
 * own allow-list, or scopes of servers already known to exist.
 */
function defaultScope(findResourceServer: ProviderSettings['findResourceServer']) {
  return async (ctx: KoaContextWithOIDC, value: string | undefined, client: Client): Promise<void> => {
    if (typeof value === 'string' && value.length > 0) return;
    let scope = client.scope;
    const resources = ctx.oidc.params?.resource;
    if (!scope && resources) {
      const servers = await Promise.all([resources].flat().map((r) => findResourceServer(String(r))));
      scope = [...new Set(servers.flatMap((rs) => rs?.scopes ?? []))].join(' ');
    }
    if (!scope) throw new errors.InvalidScope('scope is required: this client registered no default scope', '');
    ctx.oidc.params!.scope = scope;
  };
}

type IntrospectionPolicy = NonNullable<NonNullable<NonNullable<Configuration['features']>['introspection']>['allowedPolicy']>;

/** Introspection by the token's own client, or by a client that introspects for one of its audiences. */
export function introspectionPolicy(introspectsFor: ProviderSettings['introspectsFor']): IntrospectionPolicy {
  return async (_ctx, client, token) => {
    if (client.clientId === token.clientId) return true;
    const aud = (token as { aud?: unknown }).aud;
    const audiences = (Array.isArray(aud) ? aud : [aud]).filter((a): a is string => typeof a === 'string');
    return introspectsFor(client.clientId, audiences);
  };
}

/** The grant source a token is issued from (code, refresh token, CIBA request, device code): its sign-in. */
function signInBehind(ctx: KoaContextWithOIDC | undefined): { acr?: string; authTime?: number } | undefined {
  const entities = ctx?.oidc?.entities as Record<string, { acr?: string; authTime?: number } | undefined> | undefined;
  return entities?.AuthorizationCode ?? entities?.RefreshToken ?? entities?.BackchannelAuthenticationRequest ?? entities?.DeviceCode;
}

/** agentauth's own client for the connected agents page: signing in there is an authorization request. */
export const ACCOUNT_CLIENT_ID = 'agentauth-account';
export const ACCOUNT_CALLBACK_PATH = '/account/callback';

/**
 * The protocol configuration, with no I/O of its own: what agentauth and the benchmark's
 * reference servers share. buildProvider adds what is agentauth's alone (its account client,
 * registration, metadata documents, DPoP, back-channel logout, outbound fetching).
 */
export function baseConfiguration(s: BaseSettings): Configuration {
  const detailsTypes = new Map((s.detailsTypes ?? []).map((t) => [t.name, t]));
  return {
    adapter: s.adapter,
    jwks: { keys: s.signingKeys as unknown as NonNullable<Configuration['jwks']>['keys'] },
    findAccount: s.findAccount,
    scopes: s.scopes,
    claims: { openid: ['sub'] },
    // RFC 9470 / OIDC acr_values: the one level there is; freshness is max_age's (the login page again).
    acrValues: [PASSWORD_ACR],
    // OAuth 2.1: the authorization code flow only; no implicit or hybrid response types.
    responseTypes: ['code'],
    // OAuth 2.1 §4.1.1: PKCE for every client, confidential ones included (RFC 9700 §2.1.1).
    pkce: { required: () => true },
    // No client secrets: private_key_jwt for confidential clients, none (+PKCE) for public ones.
    clientAuthMethods: ['private_key_jwt', 'none'],
    clientDefaults: {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'private_key_jwt',
      id_token_signed_response_alg: 'ES256',
      // Any client may ask for any registered authorization details type unless its own
      // registration names fewer; the user approves each detail anyway.
      authorization_details_types: [...detailsTypes.keys()],
    },
    enabledJWA: {
      clientAuthSigningAlgValues: clientAuthAlgs(s.clientAuth.allowRs256) as NonNullable<
        NonNullable<Configuration['enabledJWA']>['clientAuthSigningAlgValues']
      >,
      idTokenSigningAlgValues: ['ES256'],
      userinfoSigningAlgValues: ['ES256'],
      introspectionSigningAlgValues: ['ES256'],
      authorizationSigningAlgValues: ['ES256'],
    },
    cookies: {
      keys: s.cookieKeys,
      long: { signed: true, httpOnly: true, sameSite: 'lax' },
      short: { signed: true, httpOnly: true, sameSite: 'lax' },
    },
    features: {
      // Our own login and consent pages; the built-in ones are for development only.
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      introspection: {
        enabled: true,
        // The default lets any confidential client introspect any token (SECURITY-TESTS F-3).
        // Here: the token's own client, or the resource server the token is meant for; anyone
        // else is told only active: false.
        allowedPolicy: introspectionPolicy(s.introspectsFor),
      },
      // DPoP (RFC 9449) is agentauth's own (nonces, durable proof replay): buildProvider turns it on.
      dPoP: { enabled: false },
      // RFC 8707: a request naming a registered resource server gets a token for it alone (its
      // identifier as audience, its scopes only, its format and lifetime); without one, a token
      // carries the granted scopes as before. Unknown resources are invalid_target.
      resourceIndicators: {
        enabled: true,
        // A request with authorization details and no resource is for the details' resource server.
        defaultResource: async (ctx, _client, oneOf) => {
          if (oneOf) return oneOf;
          const fromDetails = resourcesOfDetails(ctx.oidc.params?.authorization_details, detailsTypes);
          return fromDetails.length === 1 ? fromDetails[0] : fromDetails.length ? fromDetails : undefined;
        },
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          const rs = await s.findResourceServer(resource);
          if (!rs) throw new errors.InvalidTarget('unknown resource server');
          return {
            scope: rs.scopes.join(' '),
            audience: rs.identifier,
            accessTokenTTL: rs.accessTokenTtl,
            accessTokenFormat: rs.tokenFormat,
            ...(rs.tokenFormat === 'jwt' ? { jwt: { sign: { alg: 'ES256' as const } } } : {}),
          };
        },
      },
      // RP-initiated logout renders a page with inline script; we have no OIDC relying parties.
      rpInitiatedLogout: { enabled: false },
      userinfo: { enabled: false },
    },
    // Refresh tokens for every client allowed the grant: agents run unattended, so refresh is
    // tied neither to offline_access nor to the browser session.
    // A one-time detail (a payment) is approved for one transaction: no refresh token outlives it.
    issueRefreshToken: async (_ctx, client, source) =>
      client.grantTypeAllowed('refresh_token') && !hasOneTimeDetail((source as { rar?: unknown }).rar, detailsTypes),
    expiresWithSession: async () => false,
    // OAuth 2.1 §4.3.1: rotate on every use; a reused rotated token revokes the grant.
    rotateRefreshToken: true,
    ttl: {
      // A token for a resource server lives as long as that server chose (JWTs: 5 minutes).
      AccessToken: (_ctx, token) => {
        const ttl = token.resourceServer?.accessTokenTTL ?? s.ttl.accessToken;
        return hasOneTimeDetail((token as { rar?: unknown }).rar, detailsTypes) ? Math.min(ttl, ONE_TIME_TOKEN_TTL_SECONDS) : ttl;
      },
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? s.ttl.accessToken,
      AuthorizationCode: s.ttl.authorizationCode,
      // Idle timeout, capped by what is left of the chain's absolute lifetime (iiat is the first
      // token's issue time, carried through every rotation): ASVS 10.4.8.
      RefreshToken: (_ctx, token) => Math.max(1, Math.min(s.ttl.refreshToken, s.ttl.refreshChain - token.totalLifetime())),
      // A grant, and so every refresh of it, ends with the chain's absolute lifetime.
      Grant: s.ttl.refreshChain,
      Session: s.ttl.session,
      Interaction: 3600,
      // RFC 8628 §3.2: minutes, long enough to find a browser and type the code.
      DeviceCode: 600,
      BackchannelAuthenticationRequest: (ctx) => {
        const requested = Number(ctx?.oidc?.params?.requested_expiry);
        return Number.isSafeInteger(requested) && requested > 0 ? Math.min(requested, APPROVAL_MAX_SECONDS) : APPROVAL_DEFAULT_SECONDS;
      },
    },
    // Tokens name their grant (JWT claim and introspection member) so a resource server can drop
    // what it cached when the grant's revocation event, which names the same grant_id, arrives.
    // Exchanged tokens carry their chain (act) and tokens a delegate may be handed say so
    // (may_act), in the JWT and in introspection alike (RFC 8693 §4.1, §4.4).
    // RFC 9470: acr and auth_time of the sign-in behind the token, so a resource server can ask
    // for a fresher one (the JWT formatter does not emit them). A refresh keeps the original's.
    extraTokenClaims: async (ctx, token) => {
      const grantId = (token as { grantId?: string }).grantId;
      const delegation = await s.delegationClaims?.(token);
      const signIn = signInBehind(ctx);
      const claims = {
        ...delegation,
        ...(grantId ? { grant_id: grantId } : {}),
        ...(signIn?.acr ? { acr: signIn.acr } : {}),
        ...(typeof signIn?.authTime === 'number' ? { auth_time: signIn.authTime } : {}),
      };
      return Object.keys(claims).length ? claims : undefined;
    },
    interactions: {
      url: async (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    assertJwtClientAuthClaimsAndHeader: assertClientAssertion(s.clientAuth.maxAssertionLifetime),
    // RFC 8414 §2: absent, these would mean client_secret_basic, which we refuse. Introspection
    // and revocation authenticate clients exactly as the token endpoint does.
    discovery: {
      introspection_endpoint_auth_methods_supported: ['private_key_jwt', 'none'],
      introspection_endpoint_auth_signing_alg_values_supported: clientAuthAlgs(s.clientAuth.allowRs256),
      revocation_endpoint_auth_methods_supported: ['private_key_jwt', 'none'],
      revocation_endpoint_auth_signing_alg_values_supported: clientAuthAlgs(s.clientAuth.allowRs256),
    },
    // Not a new parameter: a default for `scope` (see defaultScope).
    extraParams: { scope: defaultScope(s.findResourceServer) },
  };
}

export function buildProvider(s: ProviderSettings): Provider {
  const base = baseConfiguration(s);
  const configuration: Configuration = {
    ...base,
    clients: [
      {
        client_id: ACCOUNT_CLIENT_ID,
        client_name: 'Your connected agents',
        application_type: 'web',
        redirect_uris: [`${s.issuer}${ACCOUNT_CALLBACK_PATH}`],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      },
    ],
    // The default, plus: the account page's own client needs no consent to learn who you are.
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId ?? ctx.oidc.session?.grantIdFor(ctx.oidc.client!.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      if (ctx.oidc.client?.clientId !== ACCOUNT_CLIENT_ID || !ctx.oidc.session?.accountId) return undefined;
      const grant = new ctx.oidc.provider.Grant({ clientId: ACCOUNT_CLIENT_ID, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid');
      await grant.save();
      return grant;
    },
    renderError: s.renderError,
    enabledJWA: {
      ...base.enabledJWA,
      // Asymmetric, and what agents' libraries make: ES256, EdDSA (Ed25519), PS256; never RS256 or HMAC.
      dPoPSigningAlgValues: [...DPOP_ALGS],
    },
    features: {
      ...base.features,
      // RFC 9449: sender-constrained tokens, with shared nonces and durable jti replay (oauth/dpop.ts).
      dPoP: dpopFeature(s.dpop),
      // The types file ties this feature's shape to introspection's through conditional types it cannot resolve here.
      richAuthorizationRequests: richAuthorizationRequests(s.detailsTypes) as never,
      // OpenID CIBA Core 1.0: an agent asks, its user approves on /account (src/approvals), and the
      // agent polls or is pinged at its registered endpoint. No user codes, no login_hint_token.
      ciba: { enabled: true, deliveryModes: ['poll', 'ping'], ...s.ciba },
      // RFC 8628 for agents in a terminal: the user types the code at /device and signs in there
      // with the same login and consent pages. Codes of 8 letters with no vowels (base-20).
      deviceFlow: { enabled: true, charset: 'base-20', mask: '****-****', ...s.devicePages },
      // OIDC back-channel logout for clients that register a backchannel_logout_uri: sent when a
      // grant of theirs is revoked (from the revocation outbox, with retries).
      backchannelLogout: { enabled: true },
      // RFC 7591/7592. Who may register is decided before oidc-provider sees the request (an
      // initial access token, or open registration for public clients); every resulting client
      // is checked against our policy when the adapter stores it.
      registration: {
        enabled: true,
        initialAccessToken: false,
        issueRegistrationAccessToken: true,
        idFactory: () => `agt_${randomBytes(16).toString('base64url')}`,
      },
      // The registration access token is replaced on every update (RFC 7592 §3).
      registrationManagement: { enabled: true, rotateRegistrationAccessToken: true },
      // A client_id that is the https URL of the client's metadata (what MCP clients prefer), when
      // enabled: fetches are budgeted per IP, clients held to the open registration policy.
      clientIdMetadataDocument: {
        enabled: Boolean(s.metadataDocuments),
        ...(s.metadataDocuments ? { ack: 'draft-02' } : {}),
        allowFetch: async (ctx, clientId) => s.metadataDocuments!.allowFetch(ctx?.ip ?? 'unknown', clientId),
        allowClient: async (_ctx, client) => {
          // Held to the scopes open to unverified clients (oidc-provider builds it anew per request).
          Object.assign(client, { scope: await s.metadataDocuments!.admitClient(client.metadata() as ClientMetadata) });
          return true;
        },
        // Re-read at least hourly whatever the document's Cache-Control says; at most once a minute.
        cacheDuration: { min: 60, max: 3600 },
      },
    },
    // Where agentauth pushes a signed event when one of the agent's grants is revoked (RFC 8935);
    // checked by the registration policy like every URL agentauth itself calls.
    // Also where DPOP_REQUIRED_FOR_PUBLIC_CLIENTS holds public clients to DPoP (see oauth/dpop.ts).
    extraClientMetadata: {
      properties: ['event_delivery_uri'],
      validator: (ctx, key, value, metadata) => {
        nativeWhenLoopbackOnly(ctx, key, value, metadata);
        if (key !== 'event_delivery_uri' || !s.dpop.requiredForPublicClients) return;
        requireDpopOfPublicClient(metadata, ACCOUNT_CLIENT_ID, ctx !== undefined && ['registration', 'client_update'].includes(String(ctx.oidc?.route)));
      },
    },
    // Every request the provider sends goes through our outbound module: https, the address
    // policy checked on the dialled socket, no redirects, 64 KiB. oidc-provider's own dispatcher
    // (its socket check) is replaced by ours, with its 2.5 s deadline kept through `signal`.
    fetch: (url, options) => s.outbound.fetch(url instanceof Request ? url.url : url, options as RequestInit),
    // Responses at most 64 KiB from any URL oidc-provider fetches (jwks_uri): the default is unbounded.
    fetchResponseBodyLimits: { jwks_uri: 64 * 1024, sector_identifier_uri: 64 * 1024, client_id_metadata_document: 64 * 1024 },
  };
  // No request holds a database connection while it waits on a remote host (jwks_uri, metadata
  // documents during client authentication): a slow host would drain the pool for everyone.
  const fetchRemote = configuration.fetch!;
  configuration.fetch = (url, options) => s.withoutConnection(() => fetchRemote(url, options));
  const provider = new Provider(s.issuer, configuration);
  provider.proxy = s.trustProxy;
  installNonceRotation(provider, s.dpop.nonceSecrets);
  // oidc-provider always says user codes are supported on the backchannel endpoint; ours refuses them.
  provider.use(async function truthfulMetadata(ctx, next) {
    await next();
    const body = ctx.body as Record<string, unknown> | undefined;
    if ((ctx as unknown as KoaContextWithOIDC).oidc?.route === 'discovery' && body && 'backchannel_user_code_parameter_supported' in body) {
      body.backchannel_user_code_parameter_supported = false;
    }
  });
  return provider;
}
