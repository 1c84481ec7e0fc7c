/**
 * Every Prometheus metric agentauth exposes, and the one place that records them. Other modules
 * call the named functions of `metrics` where a fact is already known (a token issued, a grant
 * revoked, a limit refusing); nothing else touches prom-client. docs/operations.md lists them.
 *
 * Labels are closed sets chosen here (route names, grant types, reasons, status classes): never
 * a token, a user or client id, or a raw path, so a metric can neither leak a credential nor
 * grow without bound.
 *
 * One registry per process, like the root logger: these are facts of the process. Nothing runs at
 * import; `enableProcessMetrics` and `observeStorage` are called by main.ts when it serves.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();

export type RateLimitName = 'token' | 'registration' | 'login_failure' | 'metadata_document' | 'user_code';
export type SubscriberKind = 'client' | 'resource_server' | 'product';
export type ReuseArtifact = 'refresh_token' | 'authorization_code';
/** connection: unreachable, lost or refused; timeout: a statement or command ran out of time; query: any other error. */
import type { PoolStats, StorageErrorKind } from '../storage/observer.ts';
import { requestContext } from '../http/request-context.ts';

export type { PoolStats, StorageErrorKind };

const RATE_LIMITS: RateLimitName[] = ['token', 'registration', 'login_failure', 'metadata_document', 'user_code'];
const SUBSCRIBERS: SubscriberKind[] = ['client', 'resource_server', 'product'];
const STORAGE_ERRORS: StorageErrorKind[] = ['connection', 'timeout', 'query'];

const httpRequests = new Counter({
  name: 'agentauth_http_requests_total',
  help: 'HTTP requests answered, by endpoint (route name) and outcome (status class).',
  labelNames: ['endpoint', 'outcome'] as const,
  registers: [registry],
});

const httpDuration = new Histogram({
  name: 'agentauth_http_request_duration_seconds',
  help: 'Time from receiving a request to its answer, by endpoint and outcome.',
  labelNames: ['endpoint', 'outcome'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [registry],
});

const tokensIssued = new Counter({
  name: 'agentauth_tokens_issued_total',
  help: 'Token endpoint responses that issued tokens, by grant type (a refresh retry issues nothing and is not counted).',
  labelNames: ['grant_type'] as const,
  registers: [registry],
});

const refreshRotations = new Counter({
  name: 'agentauth_refresh_token_rotations_total',
  help: 'Refresh tokens rotated: a used refresh token replaced by its successor.',
  registers: [registry],
});

const refreshRetries = new Counter({
  name: 'agentauth_refresh_token_retries_total',
  help: 'Refreshes answered with the same successor again (the predecessor presented within the retry window).',
  registers: [registry],
});

const reuseDetections = new Counter({
  name: 'agentauth_reuse_detections_total',
  help: 'A used refresh token or authorization code presented again: the grant was revoked.',
  labelNames: ['artifact'] as const,
  registers: [registry],
});

const grantRevocations = new Counter({
  name: 'agentauth_grant_revocations_total',
  help: 'Grants revoked, by reason.',
  labelNames: ['reason'] as const,
  registers: [registry],
});

const rateLimitRefusals = new Counter({
  name: 'agentauth_rate_limit_refusals_total',
  help: 'Requests refused by a rate limit, by limit.',
  labelNames: ['limit'] as const,
  registers: [registry],
});

const deliveries = new Counter({
  name: 'agentauth_revocation_deliveries_total',
  help: 'Revocation events (and back-channel logouts) delivered, by subscriber kind.',
  labelNames: ['subscriber'] as const,
  registers: [registry],
});

const deliveryFailures = new Counter({
  name: 'agentauth_revocation_delivery_failures_total',
  help: 'Failed delivery attempts of revocation events (each is retried with backoff), by subscriber kind.',
  labelNames: ['subscriber'] as const,
  registers: [registry],
});

const postgresErrors = new Counter({
  name: 'agentauth_postgres_errors_total',
  help: 'Errors from PostgreSQL (or the embedded PGlite), by kind.',
  labelNames: ['kind'] as const,
  registers: [registry],
});

const redisErrors = new Counter({
  name: 'agentauth_redis_errors_total',
  help: 'Errors from Redis (failed commands, connection errors), by kind.',
  labelNames: ['kind'] as const,
  registers: [registry],
});

// Series with a known, closed label set start at 0, so rate() and absent-series alerts work
// from the first scrape instead of after the first incident.
for (const limit of RATE_LIMITS) rateLimitRefusals.inc({ limit }, 0);
for (const subscriber of SUBSCRIBERS) {
  deliveries.inc({ subscriber }, 0);
  deliveryFailures.inc({ subscriber }, 0);
}
for (const kind of STORAGE_ERRORS) {
  postgresErrors.inc({ kind }, 0);
  redisErrors.inc({ kind }, 0);
}
for (const artifact of ['refresh_token', 'authorization_code'] as const) reuseDetections.inc({ artifact }, 0);
for (const grant_type of ['authorization_code', 'refresh_token', 'client_credentials']) tokensIssued.inc({ grant_type }, 0);

/**
 * Counts made during an HTTP request wait for its answer: a request that ends in a 5xx rolled
 * its transaction back, so the token it was about to issue or the grant it revoked never
 * happened and must not be counted. Counts made elsewhere (workers, CLI) apply at once.
 */
interface Deferred {
  counts: (() => void)[];
  ended: boolean;
}
/** Outside a request context (a test calling countWithinRequest directly): a store of its own. */
const deferred = new AsyncLocalStorage<Deferred>();

function count(apply: () => void): void {
  const open = requestContext()?.deferredCounts ?? deferred.getStore();
  if (open && !open.ended) open.counts.push(apply);
  else apply();
}

/** Runs one request; its counts apply only if it returned and `succeeded()` (no 5xx). */
export async function countWithinRequest(run: () => Promise<void>, succeeded: () => boolean): Promise<void> {
  const scope: Deferred = { counts: [], ended: false };
  const request = requestContext();
  let returned = false;
  try {
    if (request) {
      request.deferredCounts = scope;
      await run();
    } else {
      await deferred.run(scope, run);
    }
    returned = true;
  } finally {
    scope.ended = true;
    if (returned && succeeded()) for (const apply of scope.counts) apply();
  }
}

/** A grant type as a label: what oidc-provider accepted (so a registered one), bounded anyway. */
const grantTypeLabel = (grantType: string) => (/^[A-Za-z0-9:._-]{1,100}$/.test(grantType) ? grantType : 'other');
const reasonLabel = (reason: string) => (/^[a-z0-9_]{1,64}$/.test(reason) ? reason : 'other');

export const metrics = {
  request(endpoint: string, status: number, seconds: number): void {
    const labels = { endpoint, outcome: `${Math.floor(status / 100)}xx` };
    httpRequests.inc(labels);
    httpDuration.observe(labels, seconds);
  },
  tokenIssued(grantType: string): void {
    count(() => tokensIssued.inc({ grant_type: grantTypeLabel(grantType) }));
  },
  refreshRotated(): void {
    count(() => refreshRotations.inc());
  },
  refreshRetried(): void {
    count(() => refreshRetries.inc());
  },
  reuseDetected(artifact: ReuseArtifact): void {
    count(() => reuseDetections.inc({ artifact }));
  },
  grantRevoked(reason: string): void {
    count(() => grantRevocations.inc({ reason: reasonLabel(reason) }));
  },
  rateLimitRefused(limit: RateLimitName): void {
    count(() => rateLimitRefusals.inc({ limit }));
  },
  delivered(subscriber: SubscriberKind): void {
    count(() => deliveries.inc({ subscriber }));
  },
  deliveryFailed(subscriber: SubscriberKind): void {
    count(() => deliveryFailures.inc({ subscriber }));
  },
  /** Storage errors count at once: a failed request is exactly when they matter. */
  postgresError(kind: StorageErrorKind): void {
    postgresErrors.inc({ kind });
  },
  redisError(kind: StorageErrorKind): void {
    redisErrors.inc({ kind });
  },
};

export interface OutboxBacklog {
  /** Revocation events not yet delivered. */
  pending: number;
  /** Age of the oldest of them, seconds (0 when none). */
  oldestSeconds: number;
}

export interface StorageProbes {
  pool(): PoolStats;
  outboxBacklog(): Promise<OutboxBacklog>;
}

/** Gauges read at scrape time from the storage this process opened. Call once. */
export function observeStorage(probes: StorageProbes): void {
  const poolGauge = (name: string, help: string, read: (s: PoolStats) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read(probes.pool()));
      },
    });
  poolGauge('agentauth_postgres_pool_connections', 'PostgreSQL connections open (PGlite: its single connection).', (s) => s.total);
  poolGauge('agentauth_postgres_pool_idle_connections', 'PostgreSQL connections open and idle.', (s) => s.idle);
  poolGauge(
    'agentauth_postgres_pool_waiting_requests',
    'Callers waiting for a PostgreSQL connection: above 0 for long, the pool is too small or queries too slow.',
    (s) => s.waiting,
  );

  // Both gauges are collected in parallel on each scrape: they share one reading (one query).
  let last: OutboxBacklog = { pending: 0, oldestSeconds: 0 };
  let reading: Promise<OutboxBacklog> | undefined;
  const read = () => {
    // An unreachable database leaves the last reading (the error itself is counted by the Db):
    // a scrape must answer, or the outage also blinds the dashboards.
    reading ??= probes
      .outboxBacklog()
      .then(
        (backlog) => (last = backlog),
        () => last,
      )
      .finally(() => {
        reading = undefined;
      });
    return reading;
  };
  new Gauge({
    name: 'agentauth_revocation_outbox_pending_events',
    help: 'Revocation events queued and not yet delivered.',
    registers: [registry],
    async collect() {
      this.set((await read()).pending);
    },
  });
  new Gauge({
    name: 'agentauth_revocation_outbox_oldest_pending_seconds',
    help: 'Age of the oldest undelivered revocation event, seconds (0 when none).',
    registers: [registry],
    async collect() {
      this.set((await read()).oldestSeconds);
    },
  });
}

/** prom-client's standard process and Node.js metrics (process_*, nodejs_*), unprefixed as dashboards expect. */
export function enableProcessMetrics(): void {
  collectDefaultMetrics({ register: registry });
}

/** The exposition: Prometheus text format. */
export async function renderMetrics(): Promise<{ contentType: string; body: string }> {
  return { contentType: registry.contentType, body: await registry.metrics() };
}
