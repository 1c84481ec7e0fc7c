/**
 * The running provider and its reloads. oidc-provider takes its signing keys and scopes at
 * construction (it copies what it is given), so a change to either builds a new provider, with
 * the same app middleware, and swaps it in; requests under way finish on the old one.
 *
 * Instances learn of a change three ways: the key-value store's generation, checked before
 * each request that depends on keys or scopes; a pub/sub nudge; and a timer reading Postgres,
 * which also covers a store that lost its data.
 */
import type { JsonWebKey } from '../keys/signing-keys.ts';
import type Provider from 'oidc-provider';
import type { Logger } from 'pino';
import { loadKeySchedule } from '../keys/signing-keys.ts';
import { listScopes } from '../scopes/store.ts';
import { listDetailsTypes, type DetailsType } from '../authorization-details/types.ts';
import type { Db } from '../storage/db.ts';
import { CONFIG_CHANNEL, readConfigGeneration } from '../storage/generation.ts';
import type { Kv } from '../storage/kv.ts';

const GENERATION_KEY = 'config-generation';
/** Scope values oidc-provider needs to recognise besides the ones in the scopes table. */
const BUILT_IN_SCOPES = ['openid'];

export interface LiveProvider {
  current(): Provider;
  /**
   * Reloads if another process changed keys, scopes, resource servers or clients since this one
   * last looked. Resolves to the generation the shared store confirmed current (read after the
   * call, and equal to the one loaded), or undefined when that could not be confirmed (the store
   * is unreachable, lost the key, or lags the database): then nothing cached per generation may
   * be trusted.
   */
  ensureFresh(): Promise<string | undefined>;
  reload(): Promise<void>;
  close(): void;
}

export interface LiveProviderDeps {
  db: Db;
  kv: Kv;
  kek: Buffer;
  log: Logger;
  pollIntervalSeconds: number;
  /** `detailsTypes`: the registered authorization details types (RFC 9396). */
  build(signingKeys: JsonWebKey[], scopes: string[], detailsTypes: DetailsType[]): Provider;
}

/** Generations are counters as text; anything else counts as newer, so it is reloaded and replaced. */
const isNewer = (generation: string, than: string): boolean =>
  /^\d+$/.test(generation) && /^\d+$/.test(than) ? BigInt(generation) > BigInt(than) : generation !== than;

/** Tells every instance that keys or scopes changed; call after the change committed. */
export async function announceConfigChange(db: Db, kv: Kv): Promise<void> {
  const generation = await readConfigGeneration(db);
  await kv.set(GENERATION_KEY, generation, 365 * 24 * 3600);
  await kv.publish(CONFIG_CHANNEL, generation);
}

export async function startLiveProvider(deps: LiveProviderDeps): Promise<LiveProvider> {
  const { db, kv, log } = deps;
  let provider: Provider | undefined;
  let loadedGeneration = '';
  let inFlight: Promise<void> | undefined;
  /** When a rotated key starts signing or a replaced one retires: a reload is due then. */
  let keysChangeAt: number | undefined;
  const keysDue = () => keysChangeAt !== undefined && Date.now() >= keysChangeAt;

  async function load(): Promise<void> {
    const generation = await readConfigGeneration(db);
    const [{ keys, nextChange }, scopeRows, detailsTypes] = await Promise.all([loadKeySchedule(db, deps.kek), listScopes(db), listDetailsTypes(db)]);
    keysChangeAt = nextChange;
    const scopes = [...BUILT_IN_SCOPES, ...scopeRows.map((row) => row.name)];
    provider = deps.build(
      keys.map((k) => k.privateJwk),
      scopes,
      detailsTypes,
    );
    if (loadedGeneration) log.info({ generation, kids: keys.map((k) => k.kid), scopes: scopes.length }, 'keys and scopes reloaded');
    loadedGeneration = generation;
  }

  function reload(): Promise<void> {
    inFlight ??= load().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  }

  await reload();
  // A store that lost the key (or a new one) gets the database's generation, so requests can be
  // confirmed again; a change announced meanwhile is never overwritten by an older value here.
  await kv
    .get(GENERATION_KEY)
    .then((stored) => (stored === null ? kv.set(GENERATION_KEY, loadedGeneration, 365 * 24 * 3600) : undefined))
    .catch((err: unknown) => log.warn({ err }, 'config generation not stored'));
  await kv.subscribe(CONFIG_CHANNEL, (generation) => {
    if (generation !== loadedGeneration) reload().catch((err: unknown) => log.error({ err }, 'config reload failed'));
  });
  const timer = setInterval(() => {
    readConfigGeneration(db)
      .then((generation) => (generation !== loadedGeneration || keysDue() ? reload() : undefined))
      .catch((err: unknown) => log.warn({ err }, 'config generation check failed'));
  }, deps.pollIntervalSeconds * 1000);
  timer.unref();

  async function checkGeneration(): Promise<string | undefined> {
    if (keysDue()) await reload();
    let generation: string | null;
    try {
      generation = await kv.get(GENERATION_KEY);
    } catch {
      return undefined; // freshness is best effort here; the timer catches up
    }
    // Only a newer one: a store behind the database (an announcement that failed) must not make
    // every request reload; the poll already loaded what the database holds.
    if (generation && isNewer(generation, loadedGeneration)) await reload();
    return generation !== null && generation === loadedGeneration ? generation : undefined;
  }

  return {
    current: () => provider!,
    ensureFresh: sharedAfterArrival(checkGeneration),
    reload,
    close: () => clearInterval(timer),
  };
}

/**
 * Runs `check` for many callers with one run per round trip: every caller waits for a run that
 * began after it called (so a change announced before a request arrived is always seen), and
 * callers that arrive while a run is under way share the next one. Under load that is one
 * Redis read per round trip instead of one per request.
 */
export function sharedAfterArrival<T>(check: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | undefined;
  let next: Promise<T> | undefined;
  const start = (): Promise<T> => {
    running = check().finally(() => {
      running = undefined;
    });
    return running;
  };
  return () => {
    if (!running) return start();
    // Whatever the run under way came to, the next one starts after it.
    next ??= running
      .catch(() => {})
      .then(() => {
        next = undefined;
        return running ?? start();
      });
    return next;
  };
}
