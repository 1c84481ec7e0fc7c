/**
 * One error hierarchy for everything agentauth refuses, wherever it is thrown: in our routes, in
 * the admin API, in the CLI, or inside oidc-provider (an adapter call, a registration hook, a
 * token-endpoint limit). It follows oidc-provider's own `lib/helpers/errors.js`, so the library
 * renders ours as it renders its own: `error` (and `message`) is the OAuth error code, RFC 6749
 * §5.2 or the RFC that names it; `error_description` is one line for the caller; `status` the HTTP
 * status; `expose` whether the description may be shown (never for a 5xx we did not mean).
 * Each class is one stable condition, as jose's errors are, so callers test the class, not text.
 */
import { errors } from 'oidc-provider';

export class AgentauthError extends errors.OIDCProviderError {
  declare error: string;
  declare error_description: string;
  declare status: number;
  declare expose: boolean;
  /** Seconds a client should wait before trying again (429, 503): sent as Retry-After. */
  readonly retryAfter: number | undefined;

  constructor(status: number, error: string, description: string, options: { expose?: boolean; retryAfter?: number; cause?: unknown } = {}) {
    super(status, error, options.cause === undefined ? undefined : { cause: options.cause });
    this.error_description = description;
    this.expose = options.expose ?? status < 500;
    this.retryAfter = options.retryAfter;
  }
}

/** RFC 6749 §5.2 invalid_request: the input is malformed or names something that cannot be done. */
export class InvalidRequest extends AgentauthError {
  constructor(description: string) {
    super(400, 'invalid_request', description);
  }
}

/** What the request names does not exist (the admin API's 404; the CLI's exit 1). */
export class NotFound extends AgentauthError {
  constructor(description: string) {
    super(404, 'not_found', description);
  }
}

/** The request was understood and is not allowed (a page or form refused, a CSRF token that does not match). */
export class Forbidden extends AgentauthError {
  constructor(error: string, description: string) {
    super(403, error, description);
  }
}

/** A rate limit was reached (RFC 6585 §4); the caller is told when to retry. */
export class TooManyRequests extends AgentauthError {
  constructor(description: string, retryAfter: number) {
    super(429, 'too_many_requests', description, { retryAfter });
  }
}

/**
 * RFC 6749 §4.1.2.1 temporarily_unavailable: PostgreSQL or Redis cannot be reached, a commit
 * failed, or the server is saturated. Nothing was issued; the client should retry.
 */
export class TemporarilyUnavailable extends AgentauthError {
  constructor(description = 'The service is temporarily unavailable; try again shortly.', options: { retryAfter?: number; cause?: unknown } = {}) {
    super(503, 'temporarily_unavailable', description, { expose: true, retryAfter: options.retryAfter ?? 1, cause: options.cause });
  }
}

/** A unit of work whose COMMIT failed: the response must not claim success. */
export class CommitFailed extends TemporarilyUnavailable {
  constructor(cause: unknown) {
    super('The request could not be completed; try again.', { cause });
  }
}

/** RFC 7591 §3.2.2: client metadata that registration refuses, by whichever path it arrives. */
export class InvalidClientMetadata extends AgentauthError {
  constructor(description: string) {
    super(400, 'invalid_client_metadata', description);
  }
}

/** RFC 7591 §3.2.2: a redirect URI that registration refuses. */
export class InvalidRedirectUri extends AgentauthError {
  constructor(description: string) {
    super(400, 'invalid_redirect_uri', description);
  }
}

/** A command line that cannot be run as written (the CLI exits 2, as usage errors do). */
export class UsageError extends AgentauthError {
  constructor(description: string) {
    super(400, 'invalid_request', description);
  }
}

/** The environment does not describe a server that can start; lists every bad variable by name, never its value. */
export class ConfigError extends AgentauthError {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(500, 'invalid_configuration', `invalid configuration: ${problems.join('; ')}`, { expose: true });
    this.problems = problems;
  }
}

/** The body RFC 6749 §5.2 prescribes: what an exposed error shows, and nothing of one that is not. */
export function oauthErrorBody(err: AgentauthError): { error: string; error_description: string } {
  return err.expose
    ? { error: err.error, error_description: err.error_description }
    : { error: 'server_error', error_description: 'An unexpected error occurred.' };
}

/** Codes that say no more than the description does; any other names the rule, as RFC 7591's do. */
const PLAIN_CODES = new Set(['invalid_request', 'not_found', 'invalid_configuration', 'data_directory_locked', 'temporarily_unavailable']);

/** One line for an operator (the CLI's stderr, the server's refusal to start). */
export function operatorLine(err: AgentauthError): string {
  return PLAIN_CODES.has(err.error) ? err.error_description : `${err.error}: ${err.error_description}`;
}

/** The CLI's exit status for a failure: 2 for a command line it cannot run, 1 for the rest. */
export function exitCodeOf(err: unknown): 1 | 2 {
  return err instanceof UsageError ? 2 : 1;
}
