/**
 * The one reader of `process.env`. Parses every setting once, synchronously, and reports
 * every problem at once so an operator fixes a bad deployment in one go.
 */
import path from 'node:path';
import { z } from 'zod';
import { ConfigError } from './errors.ts';
import { parseNetwork, type Network } from './net/addresses.ts';
import type { OutboundPolicy } from './net/outbound.ts';

/** A named bearer credential of the admin API (src/admin/tokens.ts); the name is its audit actor. */
export interface AdminToken {
  name: string;
  token: string;
}

const booleanString = z.enum(['true', 'false', '1', '0', 'yes', 'no']).transform((v) => v === 'true' || v === '1' || v === 'yes');

const seconds = (fallback: number) =>
  z.coerce
    .number()
    .int()
    .positive()
    .max(366 * 24 * 3600)
    .default(fallback);

const base64Key32 = z.string().refine((v) => Buffer.from(v, 'base64url').length === 32, 'must be 32 bytes, base64url-encoded');

const cookieKeyList = z
  .string()
  .transform((v) =>
    v
      .split(',')
      .map((k) => k.trim())
      .filter(Boolean),
  )
  .refine((keys) => keys.length > 0 && keys.every((k) => k.length >= 32), 'must be a comma-separated list of keys of 32 or more characters');

/** Comma-separated 32-byte base64url secrets: the first is used, the others still accepted (rotation). */
const secretList = z
  .string()
  .transform((v) =>
    v
      .split(',')
      .map((k) => k.trim())
      .filter(Boolean),
  )
  .refine(
    (keys) => keys.length > 0 && keys.every((k) => Buffer.from(k, 'base64url').length === 32),
    'must be a comma-separated list of 32-byte base64url secrets',
  );

const urlWithProtocol = (protocols: string[]) =>
  z
    .string()
    .url()
    .refine((v) => protocols.includes(new URL(v).protocol), `must use ${protocols.join(' or ')}`);

const envSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  HOST: z.string().min(1).default('127.0.0.1'),
  ISSUER: urlWithProtocol(['http:', 'https:'])
    .refine((v) => !new URL(v).search && !new URL(v).hash, 'must have no query or fragment')
    .optional(),
  DATA_DIR: z.string().min(1).default('./data'),
  DATABASE_URL: urlWithProtocol(['postgres:', 'postgresql:']).optional(),
  // Off behind a pooler that cannot keep a prepared statement across transactions (PgBouncer in
  // transaction mode before 1.21, or without max_prepared_statements).
  DATABASE_PREPARED_STATEMENTS: booleanString.default(true),
  // Connections per process (each instance, each CLI command). Instances × this must fit
  // PostgreSQL's max_connections (100 by default). At least 4: the background work that may run
  // at once (a purge's lock connection and its batch, the audit sealer, event delivery) would
  // otherwise leave requests none.
  DATABASE_POOL_SIZE: z.coerce.number().int().min(4).max(500).default(10),
  REDIS_URL: urlWithProtocol(['redis:', 'rediss:']).optional(),
  REDIS_KEY_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9:_-]{1,64}$/, 'must be 1-64 of A-Z a-z 0-9 : _ -')
    .default('agentauth:'),
  KEY_ENCRYPTION_KEY: base64Key32.optional(),
  COOKIE_KEYS: cookieKeyList.optional(),
  TRUST_PROXY: booleanString.default(false),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  ACCESS_TOKEN_TTL: seconds(600),
  REFRESH_TOKEN_TTL: seconds(14 * 24 * 3600),
  AUTHORIZATION_CODE_TTL: z.coerce.number().int().min(10).max(600).default(60),
  SESSION_TTL: seconds(24 * 3600),
  // A timer: setInterval turns anything over 2^31-1 ms (24.8 days) into 1 ms.
  // Longer than resource servers cache the key set (the helper: 10 minutes).
  KEY_PROPAGATION_DELAY: z.coerce
    .number()
    .int()
    .min(0)
    .max(30 * 24 * 3600)
    .default(15 * 60),
  CONFIG_POLL_INTERVAL: z.coerce
    .number()
    .int()
    .positive()
    .max(Math.floor((2 ** 31 - 1) / 1000))
    .default(30),
  AUDIT_RETENTION_DAYS: z.coerce.number().int().min(0).max(36500).default(365),
  AUDIT_INTROSPECTION_SAMPLE_RATE: z.coerce.number().min(0).max(1).default(1),
  ADMIN_TOKEN: z
    .string()
    .min(32, 'must be at least 32 characters')
    .max(512)
    .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces')
    .optional(),
  ADMIN_TOKENS: z
    .string()
    .max(64 * 1024)
    .optional(),
  ALLOW_PRIVATE_FETCH: booleanString.default(false),
  ALLOWED_PRIVATE_NETWORKS: z.string().optional(),
  CLIENT_ASSERTION_MAX_LIFETIME: z.coerce.number().int().min(10).max(3600).default(300),
  CLIENT_AUTH_ALLOW_RS256: booleanString.default(false),
  OPEN_REGISTRATION: booleanString.default(false),
  CLIENT_ID_METADATA_DOCUMENTS: booleanString.default(false),
  TOKEN_RATE_LIMIT: z.coerce.number().int().min(1).max(1_000_000).default(600),
  REGISTRATION_RATE_LIMIT: z.coerce.number().int().min(1).max(1_000_000).default(30),
  LOGIN_FAILURE_LIMIT: z.coerce.number().int().min(1).max(1_000_000).default(20),
  LOGIN_ACCOUNT_FAILURE_LIMIT: z.coerce.number().int().min(1).max(1_000_000).default(100),
  REFRESH_RETRY_WINDOW: z.coerce.number().int().min(0).max(300).default(30),
  REFRESH_ABSOLUTE_LIFETIME: seconds(90 * 24 * 3600),
  // CIBA and the device flow: the least interval between an agent's polls (slow_down below it).
  APPROVAL_POLL_INTERVAL: z.coerce.number().int().min(1).max(60).default(5),
  // Where the product hears of each approval request, to push it to the user's phone.
  APPROVAL_WEBHOOK_URL: urlWithProtocol(['https:']).optional(),
  DPOP_NONCE_SECRETS: secretList.optional(),
  DPOP_REQUIRE_NONCE: booleanString.default(false),
  DPOP_REQUIRED_FOR_PUBLIC_CLIENTS: booleanString.default(false),
});

export interface Config {
  port: number;
  /** Set: GET /metrics is served there without a credential (and not on the main port). */
  metricsPort: number | undefined;
  host: string;
  /** Set when ISSUER is given; otherwise derived from the port once the server listens. */
  issuer: string | undefined;
  dataDir: string;
  databaseUrl: string | undefined;
  /** Whether the statements agentauth repeats are prepared once per connection (PostgreSQL). */
  databasePreparedStatements: boolean;
  databasePoolSize: number;
  redisUrl: string | undefined;
  redisKeyPrefix: string;
  keyEncryptionKey: Buffer | undefined;
  cookieKeys: string[] | undefined;
  trustProxy: boolean;
  logLevel: string;
  ttl: {
    accessToken: number;
    /** Idle timeout: a refresh token unused this long expires. */
    refreshToken: number;
    /** Absolute lifetime of a grant's refresh chain, however often it is used. */
    refreshChain: number;
    authorizationCode: number;
    session: number;
  };
  /** Default seconds within which the previous refresh token gets the same successor again. */
  refreshRetryWindow: number;
  configPollIntervalSeconds: number;
  /** Seconds a rotated signing key is published before it signs. */
  keyPropagationDelaySeconds: number;
  audit: {
    /** Days audit events are kept; 0 keeps them forever. */
    retentionDays: number;
    /** Share of introspection calls recorded, 0 to 1. */
    introspectionSampleRate: number;
  };
  /** Bearer credentials for the admin HTTP API, each named (its audit actor); none disables it. */
  adminTokens: AdminToken[];
  clientAuth: {
    /** Longest accepted client assertion lifetime (exp - iat), seconds. */
    maxAssertionLifetime: number;
    allowRs256: boolean;
  };
  /** What agentauth's own requests (jwks_uri, metadata documents, events) may dial. */
  outbound: OutboundPolicy;
  /** RFC 7591 registration without an initial access token, for public clients only. */
  openRegistration: boolean;
  /** Public clients identified by the https URL of their metadata document, held to the same policy. */
  clientIdMetadataDocuments: boolean;
  limits: {
    /** Token endpoint requests per client per minute (a client may have its own). */
    tokenPerMinute: number;
    /** Registration requests per IP address per hour. */
    registrationPerHour: number;
    /** Failed sign-ins per IP address, and per account and address, per 15 minutes. */
    loginFailuresPer15Minutes: number;
    /** Failed sign-ins per account from addresses not known-good for it, per 15 minutes. */
    loginFailuresPerAccount15Minutes: number;
  };
  dpop: {
    /**
     * Secrets DPoP-Nonce values are derived from (RFC 9449 §8), the same on every instance: the
     * first makes new nonces, every one is accepted. Unset: one derived from the key-encryption key.
     */
    nonceSecrets: Buffer[] | undefined;
    /** Every DPoP proof at the authorization server must carry a server nonce. */
    requireNonce: boolean;
    /** Public clients must send a DPoP proof with every token request (as if dpop_bound_access_tokens). */
    requiredForPublicClients: boolean;
  };
  /** True when no DATABASE_URL is set: PGlite under dataDir, one process only. */
  embedded: boolean;
  approvals: {
    /** Seconds an agent waits between polls of a CIBA request or device code (RFC 8628 §3.5 interval). */
    pollIntervalSeconds: number;
    /** The product's https endpoint for signed approval-request events; none: not sent. */
    webhookUrl: string | undefined;
  };
}

/** Parses the environment; throws ConfigError listing every bad variable by name (never its value). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.')} ${i.message}`));
  }
  const e = parsed.data;
  const problems: string[] = [];
  if (e.DATABASE_URL && !e.KEY_ENCRYPTION_KEY) {
    problems.push('KEY_ENCRYPTION_KEY is required when DATABASE_URL is set (signing keys are encrypted with it)');
  }
  if (e.DATABASE_URL && !e.COOKIE_KEYS) {
    problems.push('COOKIE_KEYS is required when DATABASE_URL is set (every instance must sign cookies alike)');
  }
  if (!e.ISSUER && e.HOST !== '127.0.0.1' && e.HOST !== 'localhost' && e.HOST !== '::1') {
    problems.push('ISSUER is required when HOST is not a loopback address');
  }
  if (e.METRICS_PORT !== undefined && e.METRICS_PORT !== 0 && e.METRICS_PORT === e.PORT) {
    problems.push('METRICS_PORT must differ from PORT');
  }
  const allowedPrivateNetworks = parseNetworks(e.ALLOWED_PRIVATE_NETWORKS, problems);
  const adminTokens = parseAdminTokens(e.ADMIN_TOKEN, e.ADMIN_TOKENS, problems);
  if (problems.length) throw new ConfigError(problems);

  return {
    port: e.PORT,
    metricsPort: e.METRICS_PORT,
    host: e.HOST,
    issuer: e.ISSUER?.replace(/\/$/, ''),
    dataDir: path.resolve(e.DATA_DIR),
    databaseUrl: e.DATABASE_URL,
    databasePreparedStatements: e.DATABASE_PREPARED_STATEMENTS,
    databasePoolSize: e.DATABASE_POOL_SIZE,
    redisUrl: e.REDIS_URL,
    redisKeyPrefix: e.REDIS_KEY_PREFIX,
    keyEncryptionKey: e.KEY_ENCRYPTION_KEY ? Buffer.from(e.KEY_ENCRYPTION_KEY, 'base64url') : undefined,
    cookieKeys: e.COOKIE_KEYS,
    trustProxy: e.TRUST_PROXY,
    logLevel: e.LOG_LEVEL,
    ttl: {
      accessToken: e.ACCESS_TOKEN_TTL,
      refreshToken: e.REFRESH_TOKEN_TTL,
      refreshChain: e.REFRESH_ABSOLUTE_LIFETIME,
      authorizationCode: e.AUTHORIZATION_CODE_TTL,
      session: e.SESSION_TTL,
    },
    configPollIntervalSeconds: e.CONFIG_POLL_INTERVAL,
    keyPropagationDelaySeconds: e.KEY_PROPAGATION_DELAY,
    refreshRetryWindow: e.REFRESH_RETRY_WINDOW,
    audit: { retentionDays: e.AUDIT_RETENTION_DAYS, introspectionSampleRate: e.AUDIT_INTROSPECTION_SAMPLE_RATE },
    adminTokens,
    clientAuth: { maxAssertionLifetime: e.CLIENT_ASSERTION_MAX_LIFETIME, allowRs256: e.CLIENT_AUTH_ALLOW_RS256 },
    outbound: { development: e.ALLOW_PRIVATE_FETCH, allowedPrivateNetworks },
    openRegistration: e.OPEN_REGISTRATION,
    clientIdMetadataDocuments: e.CLIENT_ID_METADATA_DOCUMENTS,
    limits: {
      tokenPerMinute: e.TOKEN_RATE_LIMIT,
      registrationPerHour: e.REGISTRATION_RATE_LIMIT,
      loginFailuresPer15Minutes: e.LOGIN_FAILURE_LIMIT,
      loginFailuresPerAccount15Minutes: e.LOGIN_ACCOUNT_FAILURE_LIMIT,
    },
    dpop: {
      nonceSecrets: e.DPOP_NONCE_SECRETS?.map((k) => Buffer.from(k, 'base64url')),
      requireNonce: e.DPOP_REQUIRE_NONCE,
      requiredForPublicClients: e.DPOP_REQUIRED_FOR_PUBLIC_CLIENTS,
    },
    embedded: !e.DATABASE_URL,
    approvals: { pollIntervalSeconds: e.APPROVAL_POLL_INTERVAL, webhookUrl: e.APPROVAL_WEBHOOK_URL },
  };
}

/** ALLOWED_PRIVATE_NETWORKS: comma-separated CIDRs, each inside private-use space. */
function parseNetworks(raw: string | undefined, problems: string[]): Network[] {
  const networks: Network[] = [];
  for (const cidr of (raw ?? '')
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean)) {
    try {
      networks.push(parseNetwork(cidr));
    } catch (err) {
      problems.push(`ALLOWED_PRIVATE_NETWORKS: ${(err as Error).message}`);
    }
  }
  return networks;
}

/** ADMIN_TOKEN is the token named "admin"; ADMIN_TOKENS adds "name:token" pairs. Values are never echoed. */
function parseAdminTokens(single: string | undefined, list: string | undefined, problems: string[]): AdminToken[] {
  const tokens: AdminToken[] = single ? [{ name: 'admin', token: single }] : [];
  for (const [i, entry] of (list ?? '')
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean)
    .entries()) {
    const colon = entry.indexOf(':');
    const name = entry.slice(0, colon);
    const token = entry.slice(colon + 1);
    if (colon < 1 || !/^[a-z0-9][a-z0-9_-]{0,63}$/.test(name))
      problems.push(`ADMIN_TOKENS entry ${i + 1} must be name:token with a name of a-z 0-9 _ - (up to 64)`);
    else if (token.length < 32 || !/^[\x21-\x7e]+$/.test(token) || token.includes(','))
      problems.push(`ADMIN_TOKENS entry ${name} needs a token of 32 or more printable characters without spaces or commas`);
    else if (tokens.some((t) => t.name === name)) problems.push(`ADMIN_TOKENS names ${name} twice`);
    else tokens.push({ name, token });
  }
  return tokens;
}
