/**
 * What the `agentauth` command can do, as plain functions over validated JSON input. The CLI
 * runs them in its own process, or, when a server holds the embedded database, asks that server
 * to run them over its admin socket; the input schema guards both doors.
 */
import { z } from 'zod';
import { InvalidRequest, NotFound } from '../errors.ts';
import { hashPassword } from '../users/passwords.ts';
import { disableAccount, findAccountByUsername, insertAccount } from '../users/store.ts';
import { buildClientMetadata, clientInputSchema, clientUpdateSchema, inputOf, registerClient, type ClientPolicy } from '../clients/registration.ts';
import {
  deleteClient,
  disableClient,
  findClient,
  listClients,
  setRefreshRetryWindow,
  setTokenRateLimit,
  updateClientMetadata,
  type ClientRecord,
} from '../clients/store.ts';
import { revokeAccountAccess, revokeClientAccess, revokeGrant } from '../revocation/revoke.ts';
import { connectedAgentsFor } from '../account/store.ts';
import { delegatesOf, setDelegates } from '../delegation/store.ts';
import { TOKEN_EXCHANGE_GRANT } from '../clients/policy.ts';
import { ACCOUNT_CLIENT_ID } from '../oauth/provider.ts';
import { deleteResourceServer, findResourceServer, insertResourceServer, listResourceServers, type ResourceServer } from '../resource-servers/store.ts';
import { checkFetchedUri, checkHttpsUrl } from '../clients/policy.ts';
import { listEvents } from '../revocation/outbox.ts';
import { createRegistrationToken } from '../clients/registration-tokens.ts';
import { DEFAULT_KEY_PROPAGATION_SECONDS, longestSignedLifetime, rotateSigningKey } from '../keys/signing-keys.ts';
import type { AuditInput, AuditLog } from '../audit/log.ts';
import { MAX_AUDIT_PAGE } from '../audit/store.ts';
import { DEFAULT_BATCH_SIZE, runMaintenance } from '../maintenance/purge.ts';
import { pino } from 'pino';
import { announceConfigChange } from '../oauth/live-provider.ts';
import { findScopes, listScopes, upsertScope, type Scope } from '../scopes/store.ts';
import { DETAILS_TYPE_NAME, listDetailsTypes, upsertDetailsType, type DetailsType } from '../authorization-details/types.ts';
import type { Db } from '../storage/db.ts';
import type { Kv } from '../storage/kv.ts';
import { bumpConfigGeneration } from '../storage/generation.ts';
import { migrate } from '../storage/migrate.ts';
import { deleteConnection, findConnection, insertConnection, listConnections, setConnectionAgents, type Connection } from '../connections/store.ts';
import { discover, UpstreamError } from '../connections/upstream.ts';

export interface OperationContext {
  db: Db;
  kv: Kv;
  keyEncryptionKey: Buffer;
  audit: AuditLog;
  clientPolicy: ClientPolicy;
  /** Who acts, for the audit trail: the command line unless an admin API token says otherwise. */
  actor?: AuditInput['actor'];
}

/** A scope as the CLI shows it (snake_case, like every other --json answer). */
const scopeView = (scope: Scope) => ({ name: scope.name, description: scope.description, allow_unverified: scope.allowUnverified });

/** Operations are an operator's acts: by default the audit trail names the admin command line. */
const COMMAND_LINE = { type: 'admin', id: 'cli' } as const;

const SCOPE_NAME = /^[A-Za-z0-9][A-Za-z0-9:._/-]{0,99}$/;
const USERNAME = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$/;

const detailsTypeView = (t: DetailsType) => ({ name: t.name, schema: t.schema, template: t.template, resource: t.resource, one_time: t.oneTime });
const CONNECTION_ID = /^[a-z0-9][a-z0-9-]{0,63}$/;
/** Upstream scopes are the provider's to name: any RFC 6749 §3.3 scope-token. */
const UPSTREAM_SCOPE = /^[\x21\x23-\x5b\x5d-\x7e]{1,200}$/;

const connectionView = (c: Connection) => ({
  id: c.id,
  name: c.displayName,
  issuer: c.issuer,
  authorization_endpoint: c.authorizationEndpoint,
  token_endpoint: c.tokenEndpoint,
  revocation_endpoint: c.revocationEndpoint,
  iss_parameter_supported: c.issParameterSupported,
  client_id: c.clientId,
  scopes: c.scopes,
  agents: c.agents,
});

/** The endpoints named, or discovered from the issuer (RFC 8414 / OIDC); each one a URL agentauth may call. */
async function connectionEndpoints(
  policy: ClientPolicy,
  input: { issuer?: string; authorizationEndpoint?: string; tokenEndpoint?: string; revocationEndpoint?: string },
): Promise<Pick<Connection, 'issuer' | 'authorizationEndpoint' | 'tokenEndpoint' | 'revocationEndpoint' | 'issParameterSupported'>> {
  if (input.issuer) checkHttpsUrl(input.issuer, 'issuer', { loopbackHttp: false });
  let endpoints: Awaited<ReturnType<typeof connectionEndpoints>>;
  if (input.authorizationEndpoint && input.tokenEndpoint) {
    endpoints = {
      issuer: input.issuer ?? null,
      authorizationEndpoint: input.authorizationEndpoint,
      tokenEndpoint: input.tokenEndpoint,
      revocationEndpoint: input.revocationEndpoint ?? null,
      issParameterSupported: false,
    };
  } else if (input.issuer && !input.authorizationEndpoint && !input.tokenEndpoint) {
    try {
      endpoints = await discover(policy.outbound, input.issuer);
    } catch (err) {
      if (err instanceof UpstreamError) throw new InvalidRequest(`discovery failed: ${err.error_description}`);
      throw err;
    }
  } else {
    throw new InvalidRequest('give --issuer (discovered), or both --authorization-endpoint and --token-endpoint');
  }
  // The browser follows the authorization endpoint; agentauth itself calls the others.
  checkHttpsUrl(endpoints.authorizationEndpoint, 'authorization_endpoint', { loopbackHttp: false });
  checkFetchedUri(endpoints.tokenEndpoint, 'token_endpoint', policy);
  if (endpoints.revocationEndpoint) checkFetchedUri(endpoints.revocationEndpoint, 'revocation_endpoint', policy);
  return endpoints;
}

const resourceView = (rs: ResourceServer) => ({
  identifier: rs.identifier,
  scopes: rs.scopes,
  token_format: rs.tokenFormat,
  access_token_ttl: rs.accessTokenTtl,
  introspector_client: rs.introspectorClient,
  event_delivery_uri: rs.eventDeliveryUri,
});

const clientView = (c: ClientRecord, delegates?: string[]) => ({
  ...c.metadata,
  ...(delegates ? { delegates } : {}),
  registration: c.registration,
  token_rate_limit: c.tokenRateLimit,
  refresh_retry_window: c.refreshRetryWindow,
  created_at: c.createdAt.toISOString(),
  disabled: c.disabledAt !== null,
});

/**
 * Sets who a client may delegate to (RFC 8693 token exchange). Each delegate must exist, be
 * another client, and be registered for the token exchange grant, or it could never use it.
 */
async function updateDelegates(db: Db, clientId: string, delegates: string[]): Promise<{ added: string[]; removed: string[] }> {
  const wanted = [...new Set(delegates)];
  for (const delegate of wanted) {
    if (delegate === clientId) throw new InvalidRequest('a client cannot be its own delegate');
    const found = await findClient(db, delegate);
    if (!found) throw new NotFound(`no client ${delegate}`);
    if (!((found.metadata.grant_types as string[] | undefined) ?? []).includes(TOKEN_EXCHANGE_GRANT))
      throw new InvalidRequest(`${delegate} is not registered for the token exchange grant (--grant-types ${TOKEN_EXCHANGE_GRANT})`);
  }
  return setDelegates(db, clientId, wanted);
}

function operation<S extends z.ZodType, R>(
  input: S,
  run: (ctx: Required<OperationContext>, input: z.infer<S>) => Promise<R>,
  options: { changesConfig?: boolean } = {},
) {
  return { input, run, changesConfig: options.changesConfig ?? false };
}

export const operations = {
  migrate: operation(z.object({}), async ({ db }) => migrate(db)),

  'users.create': operation(
    z.object({
      username: z.string().regex(USERNAME, 'must be 1-100 letters, digits or . _ @ + -'),
      password: z.string().min(8, 'must be at least 8 characters').max(1000),
    }),
    async ({ db, audit, actor }, { username, password }) => {
      const created = await insertAccount(db, username, await hashPassword(password));
      if (!created) throw new InvalidRequest(`user ${username} already exists`);
      await audit.record({ type: 'user.created', actor, accountId: created.id, details: { username } });
      return created;
    },
  ),

  'users.disable': operation(z.object({ username: z.string().min(1).max(200) }), async ({ db, audit, actor }, { username }) => {
    const disabled = await disableAccount(db, username);
    if (!disabled) throw new NotFound(`no enabled user ${username}`);
    // Refusing refreshes is not enough: tokens already issued must die too.
    const revoked = await revokeAccountAccess(db, audit, disabled.id, actor, 'user_disabled');
    await audit.record({ type: 'user.disabled', actor, accountId: disabled.id, details: { username, revoked_grants: revoked.grants } });
    return { id: disabled.id, username, disabled: true, revoked_grants: revoked.grants };
  }),

  'scopes.create': operation(
    z.object({
      name: z.string().regex(SCOPE_NAME, 'must be 1-100 of letters, digits and : . _ / - (no spaces)'),
      description: z.string().trim().min(1).max(300),
      allowUnverified: z.boolean().default(false),
    }),
    async ({ db, audit, actor }, scope) => {
      if (scope.name === 'openid' || scope.name === 'offline_access') throw new InvalidRequest(`${scope.name} is built in`);
      await audit.record({
        type: 'scope.created',
        actor,
        scopes: scope.name,
        details: { description: scope.description, allow_unverified: scope.allowUnverified },
      });
      return scopeView(await upsertScope(db, scope));
    },
    { changesConfig: true },
  ),

  'details-types.create': operation(
    z.object({
      name: z.string().regex(DETAILS_TYPE_NAME, 'must be 1-100 of letters, digits and : . _ / - (no spaces)'),
      schema: z.record(z.string(), z.unknown()),
      template: z.string().trim().min(1).max(300),
      resource: z.string().url().max(2000).optional(),
      oneTime: z.boolean().default(false),
    }),
    async ({ db, audit, actor }, input) => {
      if (input.resource && !(await findResourceServer(db, input.resource))) {
        throw new InvalidRequest(`unknown resource server ${input.resource}: create it first with "agentauth resources create"`);
      }
      const type: DetailsType = { name: input.name, schema: input.schema, template: input.template, resource: input.resource ?? null, oneTime: input.oneTime };
      await upsertDetailsType(db, type);
      await audit.record({ type: 'details_type.registered', actor, details: detailsTypeView(type) });
      return detailsTypeView(type);
    },
    { changesConfig: true },
  ),

  'details-types.list': operation(z.object({}), async ({ db }) => ({ types: (await listDetailsTypes(db)).map(detailsTypeView) })),

  'scopes.list': operation(z.object({}), async ({ db }) => ({ scopes: (await listScopes(db)).map(scopeView) })),

  'clients.create': operation(clientInputSchema, async ({ db, audit, clientPolicy, actor }, input) => registerClient(db, audit, input, clientPolicy, actor)),

  'clients.update': operation(
    clientUpdateSchema,
    async ({ db, audit, clientPolicy, actor }, { clientId, tokenRateLimit, refreshRetryWindow, delegates, ...changes }) => {
      const current = await findClient(db, clientId);
      if (!current) throw new NotFound(`no client ${clientId}`);
      const base = inputOf(current.metadata);
      const authChanged = changes.jwks !== undefined || changes.jwksUri !== undefined || changes.public !== undefined;
      const next = {
        ...base,
        ...Object.fromEntries(Object.entries(changes).filter(([, v]) => v !== undefined)),
        ...(authChanged ? { jwks: changes.jwks, jwksUri: changes.jwksUri, public: changes.public ?? false } : {}),
      };
      const metadata = await buildClientMetadata(db, next, clientPolicy, current);
      await updateClientMetadata(db, metadata);
      if (tokenRateLimit !== undefined) await setTokenRateLimit(db, clientId, tokenRateLimit);
      if (refreshRetryWindow !== undefined) await setRefreshRetryWindow(db, clientId, refreshRetryWindow);
      // Instances cache active clients per configuration generation (see clientCache).
      await bumpConfigGeneration(db);
      const changed = Object.keys(metadata).filter((k) => JSON.stringify(metadata[k]) !== JSON.stringify(current.metadata[k]));
      if (tokenRateLimit !== undefined && tokenRateLimit !== current.tokenRateLimit) changed.push('token_rate_limit');
      if (refreshRetryWindow !== undefined && refreshRetryWindow !== current.refreshRetryWindow) changed.push('refresh_retry_window');
      const delegation = delegates === undefined ? undefined : await updateDelegates(db, clientId, delegates);
      if (delegation && (delegation.added.length || delegation.removed.length)) changed.push('delegates');
      await audit.record({
        type: 'client.updated',
        actor,
        clientId,
        details: {
          changed,
          client_name: metadata.client_name,
          ...(delegation ? { delegates_added: delegation.added, delegates_removed: delegation.removed } : {}),
        },
      });
      return clientView((await findClient(db, clientId))!, await delegatesOf(db, clientId));
    },
    { changesConfig: true },
  ),

  'clients.disable': operation(
    z.object({ clientId: z.string().min(1).max(200) }),
    async ({ db, audit, actor }, { clientId }) => {
      if (!(await findClient(db, clientId))) throw new NotFound(`no client ${clientId}`);
      const disabled = await disableClient(db, clientId);
      await bumpConfigGeneration(db);
      const revoked = await revokeClientAccess(db, audit, clientId, actor, 'client_disabled');
      if (disabled) await audit.record({ type: 'client.disabled', actor, clientId, details: revoked });
      return { client_id: clientId, disabled: true, revoked_grants: revoked.grants, deleted_tokens: revoked.tokens };
    },
    { changesConfig: true },
  ),

  'clients.delete': operation(
    z.object({ clientId: z.string().min(1).max(200) }),
    async ({ db, audit, actor }, { clientId }) => {
      if (!(await findClient(db, clientId))) throw new NotFound(`no client ${clientId}`);
      const revoked = await revokeClientAccess(db, audit, clientId, actor, 'client_deleted');
      await deleteClient(db, clientId);
      await bumpConfigGeneration(db);
      await audit.record({ type: 'client.deleted', actor, clientId, details: revoked });
      return { client_id: clientId, deleted: true, revoked_grants: revoked.grants, deleted_tokens: revoked.tokens };
    },
    { changesConfig: true },
  ),

  'registration-tokens.create': operation(
    z.object({
      expiresIn: z
        .number()
        .int()
        .min(60)
        .max(365 * 24 * 3600),
      uses: z.number().int().min(1).max(1_000_000).nullable(),
    }),
    async ({ db, audit, actor }, { expiresIn, uses }) => {
      const created = await createRegistrationToken(db, expiresIn, uses);
      await audit.record({ type: 'registration_token.issued', actor, details: { expires_at: created.expires_at, uses } });
      return created;
    },
  ),

  'resources.create': operation(
    z.object({
      identifier: z.string().max(2000),
      scopes: z.array(z.string().regex(SCOPE_NAME)).min(1).max(100),
      tokenFormat: z.enum(['opaque', 'jwt']).default('opaque'),
      accessTokenTtl: z.number().int().min(30).max(86400).optional(),
      introspectorClient: z.string().max(200).optional(),
      eventUri: z.string().max(2000).optional(),
    }),
    async ({ db, audit, clientPolicy, actor }, input) => {
      // RFC 8707: an absolute URL without fragment (never fetched, so private hosts are fine).
      checkHttpsUrl(input.identifier, 'identifier', { loopbackHttp: true });
      const known = new Set((await findScopes(db, input.scopes)).map((s) => s.name));
      const unknown = input.scopes.filter((s) => !known.has(s));
      if (unknown.length) throw new InvalidRequest(`unknown scope ${unknown.join(', ')}: create it first with "agentauth scopes create"`);
      if (input.introspectorClient && !(await findClient(db, input.introspectorClient))) throw new InvalidRequest(`no client ${input.introspectorClient}`);
      if (input.eventUri) checkFetchedUri(input.eventUri, 'event_delivery_uri', clientPolicy);
      // A JWT cannot be recalled before it expires: keep it short unless told otherwise.
      const ttl = input.accessTokenTtl ?? (input.tokenFormat === 'jwt' ? 300 : 600);
      const rs = {
        identifier: input.identifier,
        scopes: [...new Set(input.scopes)],
        tokenFormat: input.tokenFormat,
        accessTokenTtl: ttl,
        introspectorClient: input.introspectorClient ?? null,
        eventDeliveryUri: input.eventUri ?? null,
      };
      if (!(await insertResourceServer(db, rs))) throw new InvalidRequest(`resource server ${input.identifier} already exists`);
      await audit.record({
        type: 'resource_server.registered',
        actor,
        resource: rs.identifier,
        scopes: rs.scopes,
        details: { token_format: rs.tokenFormat, access_token_ttl: ttl },
      });
      return resourceView(rs);
    },
    { changesConfig: true },
  ),

  'resources.list': operation(z.object({}), async ({ db }) => ({ resources: (await listResourceServers(db)).map(resourceView) })),

  'resources.show': operation(z.object({ identifier: z.string().max(2000) }), async ({ db }, { identifier }) => {
    const rs = await findResourceServer(db, identifier);
    if (!rs) throw new NotFound(`no resource server ${identifier}`);
    return resourceView(rs);
  }),

  'resources.delete': operation(
    z.object({ identifier: z.string().max(2000) }),
    async ({ db, audit, actor }, { identifier }) => {
      if (!(await deleteResourceServer(db, identifier))) throw new NotFound(`no resource server ${identifier}`);
      await audit.record({ type: 'resource_server.deleted', actor, resource: identifier });
      return { identifier, deleted: true };
    },
    { changesConfig: true },
  ),

  'connections.create': operation(
    z.object({
      id: z.string().regex(CONNECTION_ID, 'must be 1-64 lowercase letters, digits or -'),
      name: z.string().min(1).max(100),
      issuer: z.string().max(2000).optional(),
      authorizationEndpoint: z.string().max(2000).optional(),
      tokenEndpoint: z.string().max(2000).optional(),
      revocationEndpoint: z.string().max(2000).optional(),
      clientId: z.string().min(1).max(500),
      clientSecret: z.string().min(1).max(2000),
      scopes: z.array(z.string().regex(UPSTREAM_SCOPE)).max(100).default([]),
      agents: z.array(z.string().min(1).max(200)).max(1000).default([]),
    }),
    async ({ db, audit, clientPolicy, keyEncryptionKey, actor }, input) => {
      for (const agent of input.agents) if (!(await findClient(db, agent))) throw new InvalidRequest(`no client ${agent}`);
      const endpoints = await connectionEndpoints(clientPolicy, input);
      const connection = {
        id: input.id,
        displayName: input.name,
        clientId: input.clientId,
        scopes: [...new Set(input.scopes)],
        agents: [...new Set(input.agents)],
        ...endpoints,
      };
      if (!(await insertConnection(db, keyEncryptionKey, connection, input.clientSecret))) throw new InvalidRequest(`connection ${input.id} already exists`);
      await audit.record({ type: 'connection.registered', actor, details: { connection: input.id, issuer: endpoints.issuer, agents: connection.agents } });
      return connectionView(connection);
    },
  ),

  'connections.list': operation(z.object({}), async ({ db }) => ({ connections: (await listConnections(db)).map(connectionView) })),

  'connections.update': operation(
    z.object({ id: z.string().max(64), agents: z.array(z.string().min(1).max(200)).max(1000) }),
    async ({ db, audit, actor }, { id, agents }) => {
      for (const agent of agents) if (!(await findClient(db, agent))) throw new InvalidRequest(`no client ${agent}`);
      if (!(await setConnectionAgents(db, id, [...new Set(agents)]))) throw new NotFound(`no connection ${id}`);
      await audit.record({ type: 'connection.registered', actor, details: { connection: id, agents } });
      return connectionView((await findConnection(db, id))!);
    },
  ),

  'connections.delete': operation(z.object({ id: z.string().max(64) }), async ({ db, audit, actor }, { id }) => {
    if (!(await deleteConnection(db, id))) throw new NotFound(`no connection ${id}`);
    await audit.record({ type: 'connection.deleted', actor, details: { connection: id } });
    return { id, deleted: true };
  }),

  'events.list': operation(z.object({ pending: z.boolean().default(false) }), async ({ db }, { pending }) => ({
    events: (await listEvents(db, pending)).map((e) => ({
      jti: e.jti,
      grant_id: e.grantId,
      client_id: e.clientId,
      subscriber_uri: e.subscriberUri,
      reason: e.reason,
      revoked_at: e.revokedAt.toISOString(),
      attempts: e.attempts,
      state: e.deliveredAt ? 'delivered' : 'pending',
      delivered_at: e.deliveredAt?.toISOString() ?? null,
      next_attempt_at: e.deliveredAt ? null : e.nextAttemptAt.toISOString(),
      last_error: e.lastError,
    })),
  })),

  'users.grants': operation(z.object({ username: z.string().min(1).max(200) }), async ({ db }, { username }) => {
    const account = await findAccountByUsername(db, username);
    if (!account) throw new NotFound(`no user ${username}`);
    const grants = await connectedAgentsFor(db, account.id, ACCOUNT_CLIENT_ID);
    return {
      username,
      grants: grants.map((g) => ({
        // The one reader of a grant's permissions (grants/permissions.ts): each scope, and the
        // resource server it is for when it is for one.
        grant_id: g.grantId,
        client_id: g.clientId,
        client_name: g.metadata?.client_name ?? null,
        scopes: [...new Set(g.permissions.map((p) => p.scope))],
        permissions: g.permissions,
        granted_at: g.grantedAt.toISOString(),
        last_used_at: g.lastUsedAt?.toISOString() ?? null,
        live_tokens: g.liveTokens,
        // A delegation (RFC 8693 token exchange) names the grant it was handed from.
        delegated_from: g.parentGrantId,
      })),
    };
  }),

  'grants.revoke': operation(z.object({ grantId: z.string().min(1).max(200) }), async ({ db, audit, actor }, { grantId }) => {
    // The one revocation path: tombstone, tokens, audit row and revocation events together.
    if (!(await revokeGrant(db, audit, grantId, actor, 'admin_revoked'))) throw new NotFound(`no live grant ${grantId}`);
    return { grant_id: grantId, revoked: true };
  }),

  'clients.list': operation(z.object({}), async ({ db }) => ({ clients: (await listClients(db)).map((c) => clientView(c)) })),

  'clients.show': operation(z.object({ clientId: z.string().min(1).max(200) }), async ({ db }, { clientId }) => {
    const client = await findClient(db, clientId);
    if (!client) throw new NotFound(`no client ${clientId}`);
    return clientView(client, await delegatesOf(db, clientId));
  }),

  'keys.rotate': operation(
    z.object({
      propagationSeconds: z
        .number()
        .int()
        .min(0)
        .max(30 * 24 * 3600)
        .default(DEFAULT_KEY_PROPAGATION_SECONDS),
      /** Defaults to the longest lifetime of anything the keys sign (see longestSignedLifetime). */
      retireAfterSeconds: z
        .number()
        .int()
        .min(0)
        .max(366 * 24 * 3600)
        .optional(),
      accessTokenTtl: z.number().int().min(1).default(600),
    }),
    async ({ db, keyEncryptionKey, audit, actor }, input) => {
      const retireAfterSeconds = input.retireAfterSeconds ?? (await longestSignedLifetime(db, input.accessTokenTtl));
      const key = await rotateSigningKey(db, keyEncryptionKey, { propagationSeconds: input.propagationSeconds, retireAfterSeconds });
      await audit.record({
        type: 'signing_key.rotated',
        actor,
        details: { kid: key.kid, alg: key.alg, signs_from: key.signs_from, retires_previous_at: key.retires_previous_at },
      });
      return key;
    },
    { changesConfig: true },
  ),

  'audit.verify': operation(z.object({}), async ({ audit }) => audit.verify()),

  'audit.export': operation(
    z.object({
      since: z.iso.datetime({ offset: true }).optional(),
      user: z.string().max(200).optional(),
      client: z.string().max(200).optional(),
      after: z.number().int().min(0).default(0),
    }),
    async ({ db, audit }, { since, user, client, after }) => {
      // --user takes a username or an account id.
      const accountId = user ? ((await findAccountByUsername(db, user))?.id ?? user) : undefined;
      // One page per call (the CLI asks again from `next` until it is null): no cap, no huge reply.
      const events = await audit.find({ since: since ? new Date(since) : undefined, accountId, clientId: client }, after, MAX_AUDIT_PAGE);
      return { events, next: events.length === MAX_AUDIT_PAGE ? events.at(-1)!.id : null };
    },
  ),

  'audit.purge': operation(z.object({ before: z.iso.datetime({ offset: true }) }), async ({ db, audit, actor }, { before }) => {
    // Batch after batch, each committed on its own (outside this operation's transaction).
    return db.detached(async () => {
      let purged = 0;
      let throughSeq: number | undefined;
      for (
        let batch = await audit.purge(new Date(before), actor, DEFAULT_BATCH_SIZE);
        batch;
        batch = await audit.purge(new Date(before), actor, DEFAULT_BATCH_SIZE)
      ) {
        purged += batch.purged;
        throughSeq = batch.throughSeq;
      }
      return throughSeq === undefined ? { purged } : { purged, throughSeq };
    });
  }),

  'maintenance.purge': operation(
    z.object({
      tombstoneGraceSeconds: z.number().int().min(0),
      auditRetentionDays: z.number().int().min(0),
      batchSize: z.number().int().min(1).max(100_000).default(DEFAULT_BATCH_SIZE),
    }),
    async ({ db, audit }, input) => {
      const report = await runMaintenance({ db, audit, log: pino({ enabled: false }), ...input });
      return report ? { skipped: false, deleted: report } : { skipped: true, deleted: {} };
    },
  ),
};

export type OperationName = keyof typeof operations;

export const isOperationName = (name: string): name is OperationName => Object.hasOwn(operations, name);

/**
 * Validates the input and runs the operation in one transaction; bad input becomes one readable
 * InvalidRequest. A change to keys, scopes, resource servers or clients is announced to every instance once committed.
 */
export async function runOperation(ctx: OperationContext, name: string, rawInput: unknown): Promise<unknown> {
  if (!isOperationName(name)) throw new InvalidRequest(`unknown operation ${name}`);
  const op = operations[name] as { input: z.ZodType; run: (ctx: Required<OperationContext>, input: unknown) => Promise<unknown>; changesConfig: boolean };
  const parsed = op.input.safeParse(rawInput);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new InvalidRequest(`${issue.path.join('.') || 'input'} ${issue.message}`);
  }
  const result = await ctx.db.tx(() => op.run({ ...ctx, actor: ctx.actor ?? COMMAND_LINE }, parsed.data));
  if (op.changesConfig) await announceConfigChange(ctx.db, ctx.kv);
  return result;
}
