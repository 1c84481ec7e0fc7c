/**
 * Two ways to load a server: autocannon at fixed connections for one-request scenarios (each
 * request gets a fresh body from a prepared source), and a loop of concurrent workers for
 * scenarios made of several requests (a whole code flow, a revocation and its check).
 */
import autocannon from 'autocannon';

export interface Measurement {
  /** Completed units: requests, flows or revocations. */
  completed: number;
  seconds: number;
  /** Units per second. */
  rate: number;
  p50Ms: number;
  p99Ms: number;
  /** Socket errors, timeouts, and answers other than the expected status. */
  errors: number;
  /** Peak RSS of the server process(es) during the run, MiB (summed over processes). */
  rssPeakMb?: number;
  /** Server CPU time (user + system, summed over processes) per completed unit, ms: robust to a busy machine. */
  cpuMsPerUnit?: number;
  notes?: Record<string, unknown>;
}

/** Where a request body comes from: called once per request, in order. */
export type BodySource = () => string;

export interface PostLoad {
  urls: string[];
  path: string;
  body: BodySource;
  /** Headers made per request for the URL it goes to (a DPoP proof names it). */
  headers?: (url: string) => Record<string, string>;
  connections: number;
  seconds: number;
}

/**
 * autocannon against each URL at once, connections split between them. With several URLs the
 * percentiles are the worst of the instances' (autocannon reports no mergeable histogram).
 */
export async function postWithAutocannon(load: PostLoad): Promise<Measurement> {
  const perUrl = Math.max(1, Math.floor(load.connections / load.urls.length));
  const results = await Promise.all(
    load.urls.map((url) =>
      autocannon({
        url,
        connections: perUrl,
        duration: load.seconds,
        timeout: 30,
        requests: [
          {
            method: 'POST',
            path: load.path,
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            setupRequest: (request) => ({
              ...request,
              body: load.body(),
              ...(load.headers ? { headers: { ...request.headers, ...load.headers(url) } } : {}),
            }),
          },
        ],
      }),
    ),
  );
  const completed = results.reduce((n, r) => n + r['2xx'], 0);
  const seconds = Math.max(...results.map((r) => r.duration));
  const statuses: Record<string, number> = {};
  for (const r of results) for (const [code, { count }] of Object.entries(r.statusCodeStats)) statuses[code] = (statuses[code] ?? 0) + count;
  const errors = results.reduce((n, r) => n + r.non2xx + r.errors, 0);
  return {
    completed,
    seconds,
    rate: Math.round(completed / seconds),
    p50Ms: Math.max(...results.map((r) => r.latency.p50)),
    p99Ms: Math.max(...results.map((r) => r.latency.p99)),
    errors,
    ...(errors ? { notes: { status_codes: statuses, socket_errors: results.reduce((n, r) => n + r.errors, 0) } } : {}),
  };
}

/**
 * Runs `unit` on `concurrency` workers until `seconds` pass or `limit` units started; each
 * unit's time counts only if it resolves true.
 */
export async function loop(concurrency: number, seconds: number, unit: (index: number) => Promise<boolean>, limit = Infinity): Promise<Measurement> {
  const latencies: number[] = [];
  let errors = 0;
  let started = 0;
  const begin = performance.now();
  const end = begin + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end && started < limit) {
        const index = started++;
        const t0 = performance.now();
        let ok = false;
        try {
          ok = await unit(index);
        } catch {
          ok = false;
        }
        if (ok) latencies.push(performance.now() - t0);
        else errors++;
      }
    }),
  );
  const elapsed = (performance.now() - begin) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => (latencies.length ? round2(latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!) : 0);
  return { completed: latencies.length, seconds: round2(elapsed), rate: round2(latencies.length / elapsed), p50Ms: pct(50), p99Ms: pct(99), errors };
}

export const round2 = (n: number) => Math.round(n * 100) / 100;

/** Runs `fn` on up to `concurrency` items at once, keeping the results in order. */
export async function mapConcurrently<T, R>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}
