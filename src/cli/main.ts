/**
 * `agentauth <command>`: parses arguments into an operation and its input, runs it against the
 * configured storage (or through the running embedded server), prints the result.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfig, type Config } from '../config.ts';
import { AgentauthError, exitCodeOf, oauthErrorBody, operatorLine, UsageError } from '../errors.ts';
import { openRuntime } from '../runtime.ts';
import { lockHolder } from '../storage/data-dir-lock.ts';
import { callAdminSocket } from '../operations/admin-socket.ts';
import type { VerifyResult } from '../audit/log.ts';
import { runOperation, type OperationName } from '../operations/operations.ts';
import { writeEnvSecrets } from './env-file.ts';
import { AGENT_KEY_ALGS, generateAgentKeyPair, reservePrivateKeyFile, type AgentKeyAlg } from '../keys/agent-keys.ts';

type Options = NonNullable<ParseArgsConfig['options']>;
type Values = Record<string, string | boolean | string[] | undefined>;

interface Command {
  usage: string;
  summary: string;
  options?: Options;
  positionals?: string[];
  /** What the command does against storage; commands without one run `local` and need no configuration. */
  operation?: OperationName;
  local?(values: Values): Promise<unknown>;
  /** Turns parsed arguments into the operation's input (reading files or stdin as needed). */
  input?(values: Values, positionals: string[], config: Config): Promise<unknown>;
  print(result: unknown): string;
  /** Whether the result means the command failed (exit 1), e.g. a broken audit chain. */
  failed?(result: unknown): boolean;
  /** The operation answers one page `{ events, next }` per call, asked again `after: next`. */
  paged?: true;
}

const DAY_MS = 24 * 3600 * 1000;

const CLIENT_OPTIONS: Options = {
  name: { type: 'string' },
  'redirect-uri': { type: 'string', multiple: true },
  'jwks-file': { type: 'string' },
  'jwks-uri': { type: 'string' },
  public: { type: 'boolean' },
  'grant-types': { type: 'string' },
  scope: { type: 'string' },
  'rate-limit': { type: 'string' },
  'refresh-retry-window': { type: 'string' },
  'event-uri': { type: 'string' },
  'backchannel-logout-uri': { type: 'string' },
  'ciba-ping-uri': { type: 'string' },
  dpop: { type: 'string' },
};

/** Undone if the command fails after its input was prepared (a key file made for a client that was not registered). */
const undoOnFailure: (() => Promise<void>)[] = [];

function parseAlg(value: unknown): AgentKeyAlg {
  if (value === undefined) return 'ES256';
  if (!AGENT_KEY_ALGS.includes(value as AgentKeyAlg)) throw new UsageError(`--alg must be one of ${AGENT_KEY_ALGS.join(', ')}`);
  return value as AgentKeyAlg;
}

/** Makes a key pair, its private JWK in `file` (0600, never replacing a file), and returns the public JWK set. */
async function generatedKey(file: string, alg: AgentKeyAlg) {
  const reserved = await reservePrivateKeyFile(file).catch((err: NodeJS.ErrnoException) => {
    throw new UsageError(err.code === 'EEXIST' ? `${file} exists; refusing to overwrite a private key` : `cannot create ${file}: ${err.code ?? err.message}`);
  });
  const pair = await generateAgentKeyPair(alg);
  await reserved.write(pair.privateJwk);
  undoOnFailure.push(reserved.discard);
  process.stderr.write(`agentauth: private key ${pair.kid} written to ${file} (readable by you only); keep it with the agent\n`);
  return { kid: pair.kid, jwks: { keys: [pair.publicJwk] } };
}

function parseRetryWindow(value: unknown): number | null | undefined {
  if (value === undefined) return undefined;
  if (value === 'default') return null;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 300) throw new UsageError('--refresh-retry-window must be 0 to 300 seconds, or "default"');
  return n;
}

/** --dpop required|optional: whether every token request must carry a DPoP proof (RFC 9449 §5.2). */
function parseDpop(value: unknown): boolean | undefined {
  if (value === undefined) return undefined;
  if (value !== 'required' && value !== 'optional') throw new UsageError('--dpop must be required or optional');
  return value === 'required';
}

function parseRateLimit(value: unknown): number | null | undefined {
  if (value === undefined) return undefined;
  if (value === 'default') return null;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError('--rate-limit must be a whole number of requests per minute, or "default"');
  return n;
}

/** The client registration flags, as the input of clients.create (and the base of an update). */
async function clientOptions(values: Values) {
  const grantTypes =
    typeof values['grant-types'] === 'string'
      ? values['grant-types']
          .split(',')
          .map((g) => g.trim())
          .filter(Boolean)
      : undefined;
  return {
    name: typeof values.name === 'string' ? values.name : undefined,
    redirectUris: (values['redirect-uri'] as string[] | undefined) ?? [],
    jwks: typeof values['jwks-file'] === 'string' ? await readJwksFile(values['jwks-file']) : undefined,
    jwksUri: values['jwks-uri'] as string | undefined,
    public: values.public === true,
    grantTypes,
    scope: values.scope as string | undefined,
    tokenRateLimit: parseRateLimit(values['rate-limit']),
    refreshRetryWindow: parseRetryWindow(values['refresh-retry-window']),
    eventUri: values['event-uri'] as string | undefined,
    backchannelLogoutUri: values['backchannel-logout-uri'] as string | undefined,
    cibaPingUri: values['ciba-ping-uri'] as string | undefined,
    dpopBoundAccessTokens: parseDpop(values.dpop),
  };
}

const json = (v: unknown) => JSON.stringify(v, null, 2);

/** `--delegate-to a --delegate-to b` replaces the list; `--delegate-to none` empties it. */
function delegatesOption(value: unknown): string[] | undefined {
  if (value === undefined) return undefined;
  const given = value as string[];
  if (given.includes('none')) {
    if (given.length > 1) throw new UsageError('--delegate-to none clears the list: give it alone');
    return [];
  }
  return given;
}

const COMMANDS: Record<string, Command> = {
  migrate: {
    usage: 'agentauth migrate [--json]',
    summary: 'Apply database migrations (the server also applies them at start).',
    operation: 'migrate',
    input: async () => ({}),
    print: (r) => {
      const applied = (r as { applied: string[] }).applied;
      return applied.length ? `applied ${applied.join(', ')}` : 'the database is up to date';
    },
  },
  'users create': {
    usage: 'agentauth users create <username> --password-stdin [--json]',
    summary: 'Create a user; the password is read from standard input.',
    options: { 'password-stdin': { type: 'boolean' } },
    positionals: ['username'],
    operation: 'users.create',
    async input(values, [username]) {
      if (!values['password-stdin']) throw new UsageError('--password-stdin is required (passwords never go on the command line)');
      return { username, password: await readPasswordFromStdin() };
    },
    print: (r) => `created user ${(r as { username: string }).username} (${(r as { id: string }).id})`,
  },
  'users disable': {
    usage: 'agentauth users disable <username> [--json]',
    summary: 'Disable a user: they cannot sign in, and every grant they gave an agent is revoked (tokens dead, agents told).',
    positionals: ['username'],
    operation: 'users.disable',
    input: async (_values, [username]) => ({ username }),
    print: (r) => `disabled user ${(r as { username: string }).username}: revoked ${(r as { revoked_grants: number }).revoked_grants} grants`,
  },
  'users grants': {
    usage: 'agentauth users grants <username> [--json]',
    summary: "List a user's live grants: which agents they connected, with what scopes, last used when.",
    positionals: ['username'],
    operation: 'users.grants',
    input: async (_values, [username]) => ({ username }),
    print: (r) => {
      const { grants } = r as { grants: { grant_id: string; client_id: string; client_name: string | null; scopes: string[]; last_used_at: string | null }[] };
      return grants.length === 0
        ? 'no live grants'
        : grants.map((g) => `${g.grant_id}\t${g.client_name ?? g.client_id}\t${g.scopes.join(' ')}\t${g.last_used_at ?? 'never used'}`).join('\n');
    },
  },
  'grants revoke': {
    usage: 'agentauth grants revoke <grant_id> [--json]',
    summary: 'Revoke a grant: every token of it at once, with revocation events to the agent and resource servers.',
    positionals: ['grant_id'],
    operation: 'grants.revoke',
    input: async (_values, [grantId]) => ({ grantId }),
    print: (r) => `grant ${(r as { grant_id: string }).grant_id} revoked`,
  },
  'scopes create': {
    usage: 'agentauth scopes create <name> --description "<what the user is told>" [--allow-unverified] [--json]',
    summary:
      'Create a scope (or change it). Usable at once. --allow-unverified lets self-registered clients (open registration, metadata documents) request it; without it they may not.',
    options: { description: { type: 'string' }, 'allow-unverified': { type: 'boolean' } },
    positionals: ['name'],
    operation: 'scopes.create',
    async input(values, [name]) {
      if (typeof values.description !== 'string') throw new UsageError('--description is required');
      return { name, description: values.description, allowUnverified: values['allow-unverified'] === true };
    },
    print: (r) => {
      const scope = r as { name: string; description: string; allow_unverified: boolean };
      return `scope ${scope.name}: ${scope.description}${scope.allow_unverified ? ' (open to unverified clients)' : ''}`;
    },
  },
  'details-types create': {
    usage: 'agentauth details-types create <type> --schema-file <path> --template "<sentence with {field}s>" [--resource <identifier>] [--one-time] [--json]',
    summary:
      'Register an authorization details type (RFC 9396): a JSON Schema for its fields, the sentence the user reads ("Pay {amount} {currency} to {creditor}"), the resource server it is for; --one-time: one approval, one short-lived token, no refresh.',
    options: { 'schema-file': { type: 'string' }, template: { type: 'string' }, resource: { type: 'string' }, 'one-time': { type: 'boolean' } },
    positionals: ['type'],
    operation: 'details-types.create',
    async input(values, [name]) {
      if (typeof values['schema-file'] !== 'string') throw new UsageError('--schema-file is required');
      if (typeof values.template !== 'string') throw new UsageError('--template is required');
      let schema: unknown;
      try {
        schema = JSON.parse(await readFile(values['schema-file'], 'utf8'));
      } catch {
        throw new UsageError(`--schema-file ${values['schema-file']} is not a readable JSON file`);
      }
      return { name, schema, template: values.template, resource: values.resource, oneTime: values['one-time'] === true };
    },
    print: (r) => {
      const t = r as { name: string; template: string; one_time: boolean };
      return `authorization details type ${t.name}: "${t.template}"${t.one_time ? ' (one-time)' : ''}`;
    },
  },
  'details-types list': {
    usage: 'agentauth details-types list [--json]',
    summary: 'List authorization details types.',
    operation: 'details-types.list',
    input: async () => ({}),
    print: (r) => {
      const types = (r as { types: { name: string; template: string; one_time: boolean }[] }).types;
      return types.length ? types.map((t) => `${t.name}\t${t.template}${t.one_time ? '\t(one-time)' : ''}`).join('\n') : 'no authorization details types yet';
    },
  },
  'scopes list': {
    usage: 'agentauth scopes list [--json]',
    summary: 'List scopes.',
    operation: 'scopes.list',
    input: async () => ({}),
    print: (r) => {
      const scopes = (r as { scopes: { name: string; description: string; allow_unverified: boolean }[] }).scopes;
      return scopes.length
        ? scopes.map((s) => `${s.name}\t${s.description}${s.allow_unverified ? '\t(open to unverified clients)' : ''}`).join('\n')
        : 'no scopes yet';
    },
  },
  'clients create': {
    usage:
      'agentauth clients create --name <name> [--redirect-uri <uri>]... [--generate-key <file> | --jwks-file <path> | --jwks-uri <uri> | --public]\n' +
      '                         [--grant-types <a,b>] [--scope "<a b>"] [--rate-limit <per minute>]\n' +
      '                         [--refresh-retry-window <seconds>] [--event-uri <https uri>]\n' +
      '                         [--backchannel-logout-uri <https uri>] [--dpop required|optional] [--ciba-ping-uri <https uri>] [--json]',
    summary:
      'Register an agent. Prints the client, client_id included. --generate-key writes a new private JWK to <file> (mode 0600) and registers its public half.',
    options: { ...CLIENT_OPTIONS, 'generate-key': { type: 'string' }, alg: { type: 'string' } },
    operation: 'clients.create',
    async input(values) {
      if (typeof values.name !== 'string') throw new UsageError('--name is required');
      const file = values['generate-key'];
      if (typeof file !== 'string') return clientOptions(values);
      if (values['jwks-file'] !== undefined || values['jwks-uri'] !== undefined || values.public === true) {
        throw new UsageError('--generate-key registers the key it makes: leave out --jwks-file, --jwks-uri and --public');
      }
      const { jwks } = await generatedKey(file, parseAlg(values.alg));
      return { ...(await clientOptions(values)), jwks };
    },
    print: json,
  },
  'clients update': {
    usage:
      'agentauth clients update <client_id> [--name <name>] [--redirect-uri <uri>]... [--jwks-file <path> | --jwks-uri <uri> | --public]\n' +
      '                         [--grant-types <a,b>] [--scope "<a b>"] [--rate-limit <per minute>|default]\n' +
      '                         [--refresh-retry-window <seconds>|default] [--event-uri <https uri>]\n' +
      '                         [--backchannel-logout-uri <https uri>] [--delegate-to <client_id>|none]... [--dpop required|optional]\n' +
      '                         [--ciba-ping-uri <https uri>] [--json]',
    summary:
      'Change a client. Given options replace the current values; the resulting client must pass registration. --delegate-to (repeatable): the clients it may hand its users\' tokens to by token exchange (RFC 8693); "none" clears the list.',
    options: { ...CLIENT_OPTIONS, 'delegate-to': { type: 'string', multiple: true } },
    positionals: ['client_id'],
    operation: 'clients.update',
    async input(values, [clientId]) {
      const given = await clientOptions(values);
      return {
        clientId,
        name: given.name,
        redirectUris: values['redirect-uri'] === undefined ? undefined : given.redirectUris,
        jwks: given.jwks,
        jwksUri: given.jwksUri,
        public: values.public === true ? true : undefined,
        grantTypes: given.grantTypes,
        scope: given.scope,
        tokenRateLimit: given.tokenRateLimit,
        refreshRetryWindow: given.refreshRetryWindow,
        eventUri: given.eventUri,
        backchannelLogoutUri: given.backchannelLogoutUri,
        cibaPingUri: given.cibaPingUri,
        dpopBoundAccessTokens: given.dpopBoundAccessTokens,
        delegates: delegatesOption(values['delegate-to']),
      };
    },
    print: json,
  },
  'clients disable': {
    usage: 'agentauth clients disable <client_id> [--json]',
    summary: 'Disable a client: it can no longer authenticate, and every grant and token it holds is revoked.',
    positionals: ['client_id'],
    operation: 'clients.disable',
    input: async (_values, [clientId]) => ({ clientId }),
    print: (r) => {
      const d = r as { client_id: string; revoked_grants: number; deleted_tokens: number };
      return `disabled ${d.client_id}: revoked ${d.revoked_grants} grants, ${d.deleted_tokens} tokens`;
    },
  },
  'clients delete': {
    usage: 'agentauth clients delete <client_id> [--json]',
    summary: 'Delete a client after revoking every grant and token it holds.',
    positionals: ['client_id'],
    operation: 'clients.delete',
    input: async (_values, [clientId]) => ({ clientId }),
    print: (r) => {
      const d = r as { client_id: string; revoked_grants: number; deleted_tokens: number };
      return `deleted ${d.client_id}: revoked ${d.revoked_grants} grants, ${d.deleted_tokens} tokens`;
    },
  },
  'registration-tokens create': {
    usage: 'agentauth registration-tokens create [--expires-in <30m|24h|7d|seconds>] [--uses <n>] [--json]',
    summary: 'Create an initial access token for RFC 7591 registration (default: 24h, any number of uses). Shown once.',
    options: { 'expires-in': { type: 'string' }, uses: { type: 'string' } },
    operation: 'registration-tokens.create',
    async input(values) {
      const uses = typeof values.uses === 'string' ? Number(values.uses) : null;
      if (uses !== null && !Number.isInteger(uses)) throw new UsageError('--uses must be a whole number');
      return { expiresIn: parseDuration(typeof values['expires-in'] === 'string' ? values['expires-in'] : '24h'), uses };
    },
    print: (r) => {
      const t = r as { token: string; expires_at: string; uses: number | null };
      return `${t.token}\n(expires ${t.expires_at}; ${t.uses === null ? 'any number of uses' : `${t.uses} use${t.uses === 1 ? '' : 's'}`}. It is shown only this once.)`;
    },
  },
  'clients list': {
    usage: 'agentauth clients list [--json]',
    summary: 'List clients.',
    operation: 'clients.list',
    input: async () => ({}),
    print: (r) => {
      const clients = (r as { clients: { client_id: string; client_name?: string; disabled: boolean }[] }).clients;
      return clients.length ? clients.map((c) => `${c.client_id}\t${c.client_name ?? ''}${c.disabled ? '\t(disabled)' : ''}`).join('\n') : 'no clients yet';
    },
  },
  'clients show': {
    usage: 'agentauth clients show <client_id> [--json]',
    summary: 'Show one client.',
    positionals: ['client_id'],
    operation: 'clients.show',
    input: async (_values, [clientId]) => ({ clientId }),
    print: json,
  },
  'resources create': {
    usage:
      'agentauth resources create <identifier> --scopes "<a b>" [--token-format jwt|opaque] [--access-token-ttl <seconds>] [--client <client_id>] [--event-uri <https uri>] [--json]',
    summary:
      'Register a resource server (an API agents call). Tokens requested for it carry its identifier as audience. --client: the client it introspects as.',
    options: {
      scopes: { type: 'string' },
      'token-format': { type: 'string' },
      'access-token-ttl': { type: 'string' },
      client: { type: 'string' },
      'event-uri': { type: 'string' },
    },
    positionals: ['identifier'],
    operation: 'resources.create',
    async input(values, [identifier]) {
      if (typeof values.scopes !== 'string') throw new UsageError('--scopes is required');
      const ttl = typeof values['access-token-ttl'] === 'string' ? Number(values['access-token-ttl']) : undefined;
      if (ttl !== undefined && !Number.isInteger(ttl)) throw new UsageError('--access-token-ttl must be a whole number of seconds');
      return {
        identifier,
        scopes: values.scopes.split(' ').filter(Boolean),
        tokenFormat: values['token-format'],
        accessTokenTtl: ttl,
        introspectorClient: values.client,
        eventUri: values['event-uri'],
      };
    },
    print: json,
  },
  'resources list': {
    usage: 'agentauth resources list [--json]',
    summary: 'List resource servers.',
    operation: 'resources.list',
    input: async () => ({}),
    print: (r) => {
      const list = (r as { resources: { identifier: string; token_format: string; scopes: string[] }[] }).resources;
      return list.length ? list.map((x) => `${x.identifier}\t${x.token_format}\t${x.scopes.join(' ')}`).join('\n') : 'no resource servers yet';
    },
  },
  'resources show': {
    usage: 'agentauth resources show <identifier> [--json]',
    summary: 'Show one resource server.',
    positionals: ['identifier'],
    operation: 'resources.show',
    input: async (_values, [identifier]) => ({ identifier }),
    print: json,
  },
  'resources delete': {
    usage: 'agentauth resources delete <identifier> [--json]',
    summary: 'Delete a resource server; tokens can no longer be requested for it.',
    positionals: ['identifier'],
    operation: 'resources.delete',
    input: async (_values, [identifier]) => ({ identifier }),
    print: (r) => `deleted ${(r as { identifier: string }).identifier}`,
  },
  'connections create': {
    usage:
      'agentauth connections create <id> --name "<shown to users>" (--issuer <https uri> | --authorization-endpoint <uri> --token-endpoint <uri> [--revocation-endpoint <uri>]) --client-id <id> --client-secret-stdin [--scope <s>]... [--agent <client_id>]... [--json]',
    summary:
      'Register an upstream provider users can connect at /account (docs/connected-accounts.md). Endpoints are discovered from --issuer; the client secret is read from standard input and stored sealed.',
    options: {
      name: { type: 'string' },
      issuer: { type: 'string' },
      'authorization-endpoint': { type: 'string' },
      'token-endpoint': { type: 'string' },
      'revocation-endpoint': { type: 'string' },
      'client-id': { type: 'string' },
      'client-secret-stdin': { type: 'boolean' },
      scope: { type: 'string', multiple: true },
      agent: { type: 'string', multiple: true },
    },
    positionals: ['id'],
    operation: 'connections.create',
    async input(values, [id]) {
      if (typeof values.name !== 'string') throw new UsageError('--name is required');
      if (typeof values['client-id'] !== 'string') throw new UsageError('--client-id is required');
      if (!values['client-secret-stdin']) throw new UsageError('--client-secret-stdin is required (secrets never go on the command line)');
      return {
        id,
        name: values.name,
        issuer: values.issuer,
        authorizationEndpoint: values['authorization-endpoint'],
        tokenEndpoint: values['token-endpoint'],
        revocationEndpoint: values['revocation-endpoint'],
        clientId: values['client-id'],
        clientSecret: await readPasswordFromStdin(),
        scopes: (values.scope as string[] | undefined)?.flatMap((s) => s.split(' ').filter(Boolean)) ?? [],
        agents: (values.agent as string[] | undefined) ?? [],
      };
    },
    print: json,
  },
  'connections list': {
    usage: 'agentauth connections list [--json]',
    summary: 'List upstream connections and the agents allowed to use each.',
    operation: 'connections.list',
    input: async () => ({}),
    print: (r) => {
      const list = (r as { connections: { id: string; name: string; agents: string[] }[] }).connections;
      return list.length ? list.map((c) => `${c.id}\t${c.name}\t${c.agents.join(' ') || '(no agent allowed)'}`).join('\n') : 'no connections yet';
    },
  },
  'connections allow': {
    usage: 'agentauth connections allow <id> --agent <client_id>... [--json]',
    summary: 'Set which agents may obtain tokens of this connection (replaces the list; none: no agent).',
    options: { agent: { type: 'string', multiple: true } },
    positionals: ['id'],
    operation: 'connections.update',
    input: async (values, [id]) => ({ id, agents: (values.agent as string[] | undefined) ?? [] }),
    print: json,
  },
  'connections delete': {
    usage: 'agentauth connections delete <id> [--json]',
    summary: "Delete a connection and every user's tokens for it.",
    positionals: ['id'],
    operation: 'connections.delete',
    input: async (_values, [id]) => ({ id }),
    print: (r) => `deleted ${(r as { id: string }).id}`,
  },
  'events list': {
    usage: 'agentauth events list [--pending] [--json]',
    summary: 'Revocation events pushed to agents, newest first, with their delivery state.',
    options: { pending: { type: 'boolean' } },
    operation: 'events.list',
    input: async (values) => ({ pending: values.pending === true }),
    print: (r) => {
      const events = (r as { events: { jti: string; client_id: string; state: string; attempts: number; last_error: string | null; subscriber_uri: string }[] })
        .events;
      if (events.length === 0) return 'no revocation events';
      return events
        .map((e) => `${e.jti}\t${e.client_id}\t${e.state}\t${e.attempts} attempt(s)${e.last_error ? `\t${e.last_error}` : ''}\t${e.subscriber_uri}`)
        .join('\n');
    },
  },
  init: {
    usage: 'agentauth init [--out <path, default .env>] [--json]',
    summary: 'Write KEY_ENCRYPTION_KEY and COOKIE_KEYS, freshly generated, to a .env file (for docker compose); a value already there is kept.',
    // Not --env-file: Node itself reads that flag wherever it appears on the command line.
    options: { out: { type: 'string' } },
    local: async (values) => writeEnvSecrets(typeof values.out === 'string' ? values.out : '.env'),
    print: (r) => {
      const { file, added, kept } = r as { file: string; added: string[]; kept: string[] };
      return [...added.map((n) => `${n} written to ${file}`), ...kept.map((n) => `${n} already in ${file}; kept`)].join('\n');
    },
  },
  'keys generate': {
    usage: 'agentauth keys generate --out <file> [--alg ES256|EdDSA|PS256] [--json]',
    summary:
      'Make a key pair for an agent that publishes its keys at a jwks_uri: the private JWK goes to <file> (mode 0600), the public JWK set is printed to host.',
    options: { out: { type: 'string' }, alg: { type: 'string' } },
    async local(values) {
      if (typeof values.out !== 'string') throw new UsageError('--out <file> is required');
      return (await generatedKey(values.out, parseAlg(values.alg))).jwks;
    },
    print: json,
  },
  'keys rotate': {
    usage: 'agentauth keys rotate [--propagation-delay <seconds>] [--retire-after <seconds>] [--json]',
    summary:
      'Publish a new signing key now and sign with it after the propagation delay (KEY_PROPAGATION_DELAY, default 900 s, longer than resource servers cache the key set); the keys it replaces stay published until the longest token lifetime after that (or --retire-after).',
    options: { 'propagation-delay': { type: 'string' }, 'retire-after': { type: 'string' } },
    operation: 'keys.rotate',
    async input(values, _positionals, config) {
      const seconds = (name: string) => {
        const v = values[name];
        if (typeof v !== 'string') return undefined;
        if (!/^\d+$/.test(v)) throw new UsageError(`--${name} must be a number of seconds`);
        return Number(v);
      };
      return {
        propagationSeconds: seconds('propagation-delay') ?? config.keyPropagationDelaySeconds,
        retireAfterSeconds: seconds('retire-after'),
        accessTokenTtl: config.ttl.accessToken,
      };
    },
    print: (r) => {
      const k = r as { kid: string; signs_from: string; retires_previous_at: string };
      return `new signing key ${k.kid} is published; it signs from ${k.signs_from}, and the keys it replaces are unpublished at ${k.retires_previous_at}`;
    },
  },
  'audit verify': {
    usage: 'agentauth audit verify [--json]',
    summary: 'Walk the audit chain; name the first row that does not fit. Exits 1 if one does not.',
    operation: 'audit.verify',
    input: async () => ({}),
    print: (r) => {
      const v = r as VerifyResult;
      return v.ok
        ? `audit trail intact: ${v.checked} events checked; last seal ${v.head.seq}, hash ${v.head.hash}`
        : `audit trail does not verify: ${v.problem?.reason}`;
    },
    failed: (r) => !(r as VerifyResult).ok,
  },
  'audit export': {
    usage: 'agentauth audit export [--since <ISO time>] [--user <username or id>] [--client <client_id>] [--json]',
    summary: 'Write audit events as JSON lines, oldest first (with --json: one object {"events": [...]}).',
    options: { since: { type: 'string' }, user: { type: 'string' }, client: { type: 'string' } },
    operation: 'audit.export',
    input: async (values) => ({ since: values.since, user: values.user, client: values.client }),
    print: (r) => (r as { events: unknown[] }).events.map((e) => JSON.stringify(e)).join('\n'),
    paged: true,
  },
  purge: {
    usage: 'agentauth purge [--batch-size <rows>] [--json]',
    summary:
      'Delete expired credentials, dead grants, old registration tokens and revocation events, and audit events past AUDIT_RETENTION_DAYS, in batches (what every instance does every 10 minutes; one at a time).',
    options: { 'batch-size': { type: 'string' } },
    operation: 'maintenance.purge',
    async input(values, _positionals, config) {
      const batchSize = typeof values['batch-size'] === 'string' ? Number(values['batch-size']) : undefined;
      if (batchSize !== undefined && !Number.isInteger(batchSize)) throw new UsageError('--batch-size must be a whole number');
      return { tombstoneGraceSeconds: config.ttl.refreshToken, auditRetentionDays: config.audit.retentionDays, batchSize };
    },
    print: (r) => {
      const p = r as { skipped: boolean; deleted: Record<string, number> };
      if (p.skipped) return 'another process is purging; nothing done';
      return Object.entries(p.deleted)
        .map(([table, n]) => `${table}\t${n}`)
        .join('\n');
    },
  },
  'audit purge': {
    usage: 'agentauth audit purge [--before <ISO time>] [--json]',
    summary: 'Delete audit events older than AUDIT_RETENTION_DAYS (or --before); the rest still verifies.',
    options: { before: { type: 'string' } },
    operation: 'audit.purge',
    async input(values, _positionals, config) {
      if (typeof values.before === 'string') return { before: values.before };
      if (config.audit.retentionDays === 0) throw new UsageError('AUDIT_RETENTION_DAYS is 0 (keep forever); pass --before to purge anyway');
      return { before: new Date(Date.now() - config.audit.retentionDays * DAY_MS).toISOString() };
    },
    print: (r) => {
      const p = r as { purged: number; throughSeq?: number };
      return p.purged ? `purged ${p.purged} audit events (through row ${p.throughSeq})` : 'nothing to purge';
    },
  },
};

const GROUPS = ['details-types', 'users', 'scopes', 'clients', 'keys', 'audit', 'registration-tokens', 'events', 'resources', 'connections', 'grants'];

const DURATION = /^(\d+)([smhd]?)$/;
const UNIT_SECONDS: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600, d: 86400 };

function parseDuration(text: string): number {
  const match = DURATION.exec(text.trim());
  if (!match) throw new UsageError(`--expires-in ${JSON.stringify(text)} is not a duration like 30m, 24h, 7d or 3600`);
  return Number(match[1]) * UNIT_SECONDS[match[2]!]!;
}

function overview(): string {
  return [
    'agentauth: an OAuth 2.1 authorization server for AI agents',
    '',
    'Usage:',
    ...Object.values(COMMANDS).map((c) => `  ${c.usage.split('\n')[0]}`),
    '',
    'Every command takes --help and --json. Configuration comes from the environment (see README).',
  ].join('\n');
}

function commandHelp(c: Command): string {
  return `${c.usage}\n\n${c.summary}`;
}

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY)
    throw new UsageError('pipe the password on standard input, e.g. printf %s "$PASSWORD" | agentauth users create alice --password-stdin');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function readPasswordFromStdin(): Promise<string> {
  return (await readStdin()).replace(/\r?\n$/, '');
}

async function readJwksFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new UsageError(`cannot read --jwks-file ${file}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new UsageError(`--jwks-file ${file} is not JSON`);
  }
}

type Run = (operation: OperationName, input: unknown) => Promise<unknown>;

/** Runs `use` with a way to run operations: in this process, or by a running embedded server. */
async function withOperations<T>(config: Config, use: (run: Run) => Promise<T>): Promise<T> {
  // On the embedded default a running server owns the database: ask it to do the work.
  if (config.embedded && lockHolder(config.dataDir) !== undefined) return use((operation, input) => callAdminSocket(config.dataDir, operation, input));
  const runtime = await openRuntime(config);
  try {
    return await use((operation, input) => runOperation(runtime, operation, input));
  } finally {
    await runtime.close();
  }
}

/** Writes to stdout, waiting while the pipe is full (an export of millions of rows stays small in memory). */
function write(text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (process.stdout.write(text)) resolve();
    else process.stdout.once('drain', resolve).once('error', reject);
  });
}

/** Prints a paged operation's events page by page, as JSON lines or as one {"events": [...]} object. */
async function printPages(run: Run, operation: OperationName, input: unknown, json: boolean): Promise<void> {
  let after = 0;
  let first = true;
  if (json) await write('{"events":[');
  for (;;) {
    const page = (await run(operation, { ...(input as object), after })) as { events: unknown[]; next: number | null };
    const lines = page.events.map((event) => JSON.stringify(event));
    if (lines.length) await write(json ? `${first ? '' : ','}${lines.join(',')}` : `${lines.join('\n')}\n`);
    first &&= lines.length === 0;
    if (page.next === null) break;
    after = page.next;
  }
  if (json) await write(']}\n');
}

function resolveCommand(args: string[]): { name: string; command: Command; rest: string[] } {
  const [first, second] = args;
  if (first && GROUPS.includes(first)) {
    const name = `${first} ${second ?? ''}`.trim();
    const command = COMMANDS[name];
    if (!command) throw new UsageError(`unknown command "${name}"; try agentauth --help`);
    return { name, command, rest: args.slice(2) };
  }
  const command = first ? COMMANDS[first] : undefined;
  if (!first || !command) throw new UsageError(first ? `unknown command "${first}"; try agentauth --help` : 'no command given; try agentauth --help');
  return { name: first, command, rest: args.slice(1) };
}

/** An identifier agentauth made (a grant id is random base64url) may begin with "-". */
const DASHED_IDENTIFIER = /^-[A-Za-z0-9_-]{15,}$/;

/**
 * The command's options and positionals. A long token that begins with "-" and names no option is
 * an identifier (`grants revoke -Xk3…` as `users grants` printed it), taken as a positional as if
 * it came after "--"; anything else unknown is a usage error.
 */
function parseCommandLine(args: string[], options: NonNullable<ParseArgsConfig['options']>): { values: Values; positionals: string[] } {
  const identifiers = args.filter((a) => DASHED_IDENTIFIER.test(a) && !Object.hasOwn(options, a.replace(/^-+/, '')));
  const end = args.indexOf('--');
  const before = end === -1 ? args : args.slice(0, end);
  const after = end === -1 ? [] : args.slice(end + 1);
  const named = before.filter((a) => !identifiers.includes(a));
  const ids = before.filter((a) => identifiers.includes(a));
  return parseArgs({ args: [...named, '--', ...ids, ...after], options, allowPositionals: true, strict: true }) as { values: Values; positionals: string[] };
}

export async function main(argv: string[]): Promise<number> {
  const wantsJson = argv.includes('--json');
  /** One line on stderr; with --json, the same refusal as the admin API's body on stdout. */
  const report = (err: AgentauthError) => {
    process.stderr.write(`agentauth: ${operatorLine(err)}\n`);
    if (wantsJson) process.stdout.write(`${JSON.stringify(oauthErrorBody(err))}\n`);
  };
  try {
    if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h') {
      process.stdout.write(`${overview()}\n`);
      return argv.length === 0 ? 2 : 0;
    }
    const { command, rest } = resolveCommand(argv);
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(`${commandHelp(command)}\n`);
      return 0;
    }
    let parsed: { values: Values; positionals: string[] };
    try {
      parsed = parseCommandLine(rest, { ...command.options, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } });
    } catch (err) {
      throw new UsageError((err as Error).message.split('\n')[0]!);
    }
    const expected = command.positionals ?? [];
    if (parsed.positionals.length !== expected.length) {
      throw new UsageError(
        expected.length
          ? `expected ${expected.map((p) => `<${p}>`).join(' ')}; usage: ${command.usage.split('\n')[0]}`
          : `unexpected argument ${parsed.positionals[0]}`,
      );
    }
    let result: unknown;
    if (command.local) {
      result = await command.local(parsed.values);
    } else {
      const config = loadConfig();
      const input = (await command.input?.(parsed.values, parsed.positionals, config)) ?? {};
      const operation = command.operation!;
      if (command.paged) {
        await withOperations(config, (run) => printPages(run, operation, input, parsed.values.json === true));
        return 0;
      }
      result = await withOperations(config, (run) => run(operation, input));
    }
    const text = parsed.values.json ? JSON.stringify(result) : command.print(result);
    if (text) process.stdout.write(`${text}\n`);
    return command.failed?.(result) ? 1 : 0;
  } catch (err) {
    for (const undo of undoOnFailure.splice(0)) await undo();
    if (err instanceof AgentauthError && err.expose) {
      report(err);
      return exitCodeOf(err);
    }
    report(new AgentauthError(500, 'server_error', `failed: ${(err as Error).message}`, { expose: true }));
    return 1;
  }
}
