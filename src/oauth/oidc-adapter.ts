/**
 * The oidc-provider adapter. Postgres holds every credential (artifacts, grants, replay markers,
 * clients); the key-value store holds browser sessions and interactions, which may be lost.
 *
 * oidc-provider checks `consumed` and later calls `consume()`; its replay check is find-then-save.
 * Both are made atomic here, so concurrency cannot turn a single-use artifact into two wins.
 */
import { createHash } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';
import type { Adapter, AdapterPayload, KoaContextWithOIDC } from 'oidc-provider';
import { findActiveClient, isSelfRegistered, type ClientMetadata } from '../clients/store.ts';
import { scopeForUnverified, scopesOpenToUnverified } from '../scopes/store.ts';
import { findLiveGrant, lockGrant, rememberGrantLock, revokedInThisWork, upsertGrant } from '../grants/store.ts';
import * as artifacts from '../artifacts/store.ts';
import type { Db } from '../storage/db.ts';
import type { Kv } from '../storage/kv.ts';
import { containsNul, NUL_REFUSED } from '../storage/nul.ts';
import { confirmedGenerationOf } from '../http/confirmed-generation.ts';

/** Storage expiry lags token expiry so oidc-provider, not the store, decides what has expired. */
const STORAGE_GRACE_SECONDS = 60;
const DEFAULT_TTL_SECONDS = 24 * 3600;
/**
 * Credentials nothing reads back from the database in the request that issues them: stored with
 * its COMMIT (a read in the same unit of work is answered from what was written, see upsert).
 */
const DEFERRED_MODELS = new Set(['AccessToken', 'ClientCredentials', 'RefreshToken']);
/** workState key: set only inside a unit of work, where a COMMIT will come. */
const DEFERRABLE = Symbol('deferrable artifact writes');

const expiryDate = (expiresIn: number | undefined) => new Date(Date.now() + ((expiresIn ?? DEFAULT_TTL_SECONDS) + STORAGE_GRACE_SECONDS) * 1000);

export type AdapterConstructor = new (model: string) => Adapter;

/**
 * Identifiers come from requests. One that no stored row could have (NUL, which Postgres text
 * cannot hold, or absurd length) is answered as "not found" instead of reaching the database.
 */
const storableId = (id: unknown): id is string => typeof id === 'string' && id.length > 0 && id.length <= 1024 && !id.includes('\u0000');

export interface AdapterHooks {
  /**
   * Kills a grant inside the current request's transaction (tombstone, tokens, outbox) and audits
   * why, once; the same function serves the refresh rotation's reuse detection.
   */
  revokeGrant(grantId: string): Promise<void>;
  /** Client writes from RFC 7591/7592 registration: checked against policy, then stored. */
  storeClient(clientId: string, metadata: ClientMetadata): Promise<void>;
  deleteClient(clientId: string): Promise<void>;
  /** Called when a request looks an active client up; may refuse it (rate limits). */
  clientFound(clientId: string, tokenRateLimit: number | null): Promise<void>;
  /**
   * Seals and unseals a device code under the key-encryption key. The device code is the
   * agent's credential, stored only as its hash like every other; but oidc-provider finds a
   * device code by its user code and then saves it again by its value, so the row keeps the
   * value sealed.
   */
  sealDeviceCode(id: string): string;
  unsealDeviceCode(sealed: string): string;
}

/** workState key: the artifacts this unit of work has read (null: not found), by model and id. */
const ARTIFACT_READS = Symbol('artifact reads');
const readsOf = (db: Db) => db.workState(ARTIFACT_READS, () => new Map<string, artifacts.StoredArtifact | null>());
const readKey = (model: string, id: string) => `${model}\u0000${id}`;
/** workState key: grants this unit of work has read (null: not live), by id. */
const GRANT_READS = Symbol('grant reads');
const grantReadsOf = (db: Db) => db.workState(GRANT_READS, () => new Map<string, Record<string, unknown> | null>());
/** workState key: refresh tokens this unit of work holds locked and read unconsumed (see rememberRotationReads). */
const HELD_UNCONSUMED = Symbol('refresh tokens held unconsumed');
const heldUnconsumedOf = (db: Db) => db.workState(HELD_UNCONSUMED, () => new Set<string>());

/** What the refresh rotation read, under row locks, when it opened (see openRotation). */
export interface RotationReads {
  grantId: string;
  /** The grant as Grant.find answers it: its payload, or null when it is not live. */
  grantPayload: Record<string, unknown> | null;
  /** The token's row as findArtifact answers it (null when expired). */
  token: artifacts.StoredArtifact | null;
}

/**
 * The rotation of refresh token `id` has locked its grant's row and then its own, in this unit of
 * work: oidc-provider's reads of the token and the grant that follow are answered from those
 * rows, and the token's consume, which cannot lose while the lock is held, travels with the
 * COMMIT (consume_held_artifact fails the commit if it ever finds the row consumed).
 */
export function rememberRotationReads(db: Db, id: string, reads: RotationReads): void {
  rememberGrantLock(db, reads.grantId, 'live');
  grantReadsOf(db)?.set(reads.grantId, reads.grantPayload);
  readsOf(db)?.set(readKey('RefreshToken', id), reads.token);
  if (reads.token && !reads.token.consumedAt) heldUnconsumedOf(db)?.add(id);
}

/** An active client as the adapter answers it: metadata as served, and its own token rate limit. */
interface ServedClient {
  metadata: AdapterPayload;
  tokenRateLimit: number | null;
}

/** Entries kept at most; past that the cache starts over (made-up ids are never kept). */
const CLIENT_CACHE_SIZE = 10_000;

/**
 * Active clients by configuration generation. Every change to a client (update, disable, delete,
 * its rate limit or retry window) bumps the generation and announces it before the operation
 * returns, and a request may use an entry only under the generation confirmed current after it
 * arrived (ensureFresh, one shared Redis read it makes anyway), so a disabled or deleted client
 * is refused on every instance from the next request on. A request with no confirmed generation
 * (an endpoint that does not check, Redis away) reads PostgreSQL as before. Unknown and disabled
 * clients are not kept, and a generation older than one already seen is never trusted (a store
 * restored from an old copy).
 */
function clientCache() {
  const entries = new Map<string, { generation: string; client: ServedClient }>();
  let newest = -1n;
  const trusted = (generation: string | undefined): generation is string => {
    if (generation === undefined || !/^\d+$/.test(generation)) return false;
    const n = BigInt(generation);
    if (n < newest) return false;
    if (n > newest) {
      newest = n;
      entries.clear();
    }
    return true;
  };
  return {
    get(id: string, generation: string | undefined): ServedClient | undefined {
      if (!trusted(generation)) return undefined;
      const entry = entries.get(id);
      return entry?.generation === generation ? entry.client : undefined;
    },
    put(id: string, generation: string | undefined, client: ServedClient | undefined): ServedClient | undefined {
      // Read under this generation: if a newer one came meanwhile, trusted() has refused it.
      if (client && trusted(generation) && BigInt(generation) === newest) {
        if (entries.size >= CLIENT_CACHE_SIZE) entries.clear();
        entries.set(id, { generation, client });
      }
      return client;
    },
  };
}

export interface AdapterOptions {
  /**
   * Seconds a client assertion or DPoP proof jti is remembered: at least the longest an assertion
   * may be valid (its lifetime plus the clock tolerance) and a proof's 300 s window. The marker
   * is claimed before its own expiry is known (see claimReplay), so one bound serves both.
   */
  replayHorizonSeconds?: number;
}

/** How one model is stored: the adapter hands each call to its model's store. */
interface ModelStore {
  upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void>;
  find(id: string): Promise<AdapterPayload | undefined>;
  destroy(id: string): Promise<void>;
  /** Single-use artifacts only (codes, refresh tokens, device codes). */
  consume?(id: string): Promise<void>;
}

/** PostgreSQL stores no NUL: refuse it as the client's error, not a 500 from the driver. */
function refuseNul(id: string, payload: AdapterPayload, error: () => Error): void {
  if (containsNul(id) || containsNul(payload)) throw error();
}

/** Sessions and interactions: in Redis (or in-process), which may lose them. */
function sessionStore(kv: Kv, model: string): ModelStore {
  return {
    upsert: (id, payload, expiresIn) => kvUpsert(kv, model, id, payload, expiresIn),
    find: (id) => kvFind(kv, model, id),
    async destroy(id) {
      const stored = await kvFind(kv, model, id);
      if (typeof stored?.uid === 'string') await kv.del(`sessionUid:${stored.uid}`);
      await kv.del(`${model}:${id}`);
    },
  };
}

function grantStore(db: Db, revokeGrant: (grantId: string) => Promise<void>): ModelStore {
  return {
    upsert(id, payload, expiresIn) {
      refuseNul(id, payload, () => new errors.InvalidRequest(NUL_REFUSED));
      grantReadsOf(db)?.delete(id);
      return grantUpsert(db, id, payload, expiresIn);
    },
    async find(id) {
      const known = grantReadsOf(db)?.get(id);
      if (known === null) return undefined;
      if (known) return { ...known, jti: id };
      return findLiveGrant(db, id);
    },
    destroy(id) {
      readsOf(db)?.clear();
      grantReadsOf(db)?.clear();
      return revokeGrant(id);
    },
  };
}

/** Client assertion and DPoP proof jtis: claimed in find (see claimReplay); nothing to save after. */
function replayStore(db: Db, horizonSeconds: number): ModelStore {
  return {
    upsert: async () => {},
    find: (id) => claimReplay(db, id, horizonSeconds),
    destroy: async () => {},
  };
}

/**
 * A DPoP proof's marker recorded ahead, in the client assertion's statement (see claimReplay):
 * `recorded` says whether that statement recorded it (false: already spent), `sameAsAssertion`
 * that the proof's jti is the assertion's, so the one marker is this request's own.
 */
interface ProofClaimedAhead {
  id: string;
  recorded: boolean;
  sameAsAssertion: boolean;
  /** Set once oidc-provider's replay check of the proof has asked for it. */
  used: boolean;
}

/** workState key: the proof claim made ahead in this unit of work, once the first marker is claimed. */
const PROOF_AHEAD = Symbol('DPoP proof jti claimed ahead');

/** oidc-provider's ReplayDetection id for a jti (models/replay_detection.js: unique(iss, jti)). */
const replayId = (iss: string, jti: string) => createHash('sha256').update(`${iss}${jti}`).digest('base64url');

/** The routes whose handler checks a DPoP proof's jti after client authentication. */
const PROOF_CHECKING_ROUTES = new Set(['token', 'pushed_authorization_request']);

/** A compact JWT's payload, unverified (oidc-provider has verified the assertion before it asks). */
function unverifiedPayload(jwt: unknown): Record<string, unknown> | undefined {
  if (typeof jwt !== 'string' || jwt.length > 8192) return undefined;
  const part = jwt.split('.')[1];
  if (!part) return undefined;
  try {
    const payload: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return payload && typeof payload === 'object' && !Array.isArray(payload) ? (payload as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * When `id` is this request's client assertion marker and the request carries one DPoP proof, the
 * id oidc-provider will ask for when it checks that proof's jti (after verifying it, in the grant
 * handler): claimReplay then records both in one statement.
 */
function proofToClaimAhead(id: string): string | undefined {
  const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
  const oidc = ctx?.oidc;
  if (!ctx || !oidc?.route || !PROOF_CHECKING_ROUTES.has(oidc.route)) return undefined;
  const proof = ctx.get('DPoP');
  const clientId = oidc.client?.clientId;
  if (!proof || !clientId) return undefined;
  const assertion = unverifiedPayload(oidc.params?.client_assertion);
  if (typeof assertion?.iss !== 'string' || typeof assertion.jti !== 'string' || replayId(assertion.iss, assertion.jti) !== id) return undefined;
  const jti = unverifiedPayload(proof)?.jti;
  return typeof jti === 'string' && jti.length > 0 ? replayId(clientId, jti) : undefined;
}

/** Clients: read through the per-generation cache; RFC 7591/7592 writes go through the registration policy. */
function clientStore(db: Db, hooks: AdapterHooks): ModelStore {
  const clients = clientCache();
  /** The client from PostgreSQL, as the adapter serves it; undefined when it may not authenticate. */
  async function readClient(id: string): Promise<ServedClient | undefined> {
    const found = await findActiveClient(db, id);
    // A metadata document's client is read from its document (oidc-provider fetches and caches it).
    if (!found || found.registration === 'metadata_document') return undefined;
    // Held to the scopes open to unverified clients as they are now (a scope change bumps the
    // generation too), not as they were when it registered.
    const metadata = isSelfRegistered(found.registration)
      ? { ...found.metadata, scope: scopeForUnverified(found.metadata.scope, await scopesOpenToUnverified(db)) }
      : found.metadata;
    return { metadata, tokenRateLimit: found.tokenRateLimit };
  }
  return {
    upsert(id, payload) {
      refuseNul(id, payload, () => new errors.InvalidClientMetadata(NUL_REFUSED));
      return hooks.storeClient(id, { ...payload, client_id: id } as ClientMetadata);
    },
    async find(id) {
      const generation = confirmedGenerationOf((Provider.ctx as KoaContextWithOIDC | undefined)?.req);
      const client = clients.get(id, generation) ?? clients.put(id, generation, await readClient(id));
      if (!client) return undefined;
      await hooks.clientFound(id, client.tokenRateLimit);
      return client.metadata;
    },
    destroy: (id) => hooks.deleteClient(id),
  };
}

/** Every other model (codes, tokens, pushed requests…): a row of oidc_artifacts keyed by the value's hash. */
function artifactStore(db: Db, model: string, hooks: AdapterHooks): ModelStore {
  const { revokeGrant } = hooks;
  const key = (id: string) => readKey(model, id);
  return {
    async upsert(id, payload, expiresIn) {
      refuseNul(id, payload, () => new errors.InvalidRequest(NUL_REFUSED));
      const grantId = typeof payload.grantId === 'string' ? payload.grantId : null;
      // A grant-bound credential is stored only while its grant lives (see lockGrant).
      if (grantId && (await lockGrant(db, grantId)) !== 'live') throw new errors.InvalidGrant('grant is no longer valid');
      readsOf(db)?.delete(key(id));
      const { jti: _value, ...rest } = payload;
      if (model === 'DeviceCode') rest.sealedDeviceCode = hooks.sealDeviceCode(id);
      const clientId = typeof payload.clientId === 'string' ? payload.clientId : null;
      // Access tokens are issued, not read, in the request that makes them: their row travels
      // with the COMMIT (inside a unit of work; a grant's row lock above is held until then).
      if (DEFERRED_MODELS.has(model) && db.workState(DEFERRABLE, () => true)) {
        // Read back in this unit of work, it is what was written; destroyed (null) or its grant
        // revoked later in the same unit of work, it is not written at all.
        // (Checked at the COMMIT, when this unit of work is no longer current: bound here.)
        const reads = readsOf(db);
        reads?.set(key(id), { payload: rest, consumedAt: null, grantId });
        const revoked = grantId ? revokedInThisWork(db, grantId) : () => false;
        artifacts.upsertArtifactAtCommit(db, model, id, { grantId, clientId }, rest, expiryDate(expiresIn), () => reads?.get(key(id)) !== null && !revoked());
        return;
      }
      await artifacts.upsertArtifact(db, model, id, { grantId, clientId }, rest, expiryDate(expiresIn));
    },
    async find(id) {
      const reads = readsOf(db);
      let stored = reads?.get(key(id));
      if (stored === undefined) {
        stored = (await artifacts.findArtifact(db, model, id)) ?? null;
        reads?.set(key(id), stored);
      }
      if (!stored) return undefined;
      const consumed = stored.consumedAt ? { consumed: Math.floor(stored.consumedAt.getTime() / 1000) } : {};
      const { sealedDeviceCode: _sealed, ...payload } = stored.payload;
      return { ...payload, ...consumed, jti: id };
    },
    async consume(id) {
      if (model === 'RefreshToken' && heldUnconsumedOf(db)?.delete(id)) {
        readsOf(db)?.delete(key(id));
        artifacts.consumeHeldArtifactAtCommit(db, model, id);
        return;
      }
      // The grant an artifact belongs to never changes: the row read earlier in this request says it.
      const read = readsOf(db)?.get(key(id));
      readsOf(db)?.delete(key(id));
      const grantId = read ? read.grantId : await artifacts.grantOfArtifact(db, model, id);
      if (grantId) await lockGrant(db, grantId);
      if (await artifacts.consumeArtifact(db, model, id)) return;
      // Lost the race to a concurrent redemption: treat it as reuse, kill the grant's tokens.
      if (grantId) await revokeGrant(grantId);
      throw new errors.InvalidGrant(`${model === 'AuthorizationCode' ? 'authorization code' : 'token'} already used`);
    },
    async destroy(id) {
      const grantId = await artifacts.grantOfArtifact(db, model, id);
      if (grantId) await lockGrant(db, grantId);
      // oidc-provider destroys a credential it refuses (a registration access token presented for
      // another client, a reused one): that must outlast the refusal.
      db.mustCommit();
      await artifacts.deleteArtifact(db, model, id);
      // Gone: a read in this unit of work finds nothing, and a write still waiting for the COMMIT is dropped.
      readsOf(db)?.set(key(id), null);
      heldUnconsumedOf(db)?.delete(id);
    },
  };
}

export function createAdapterClass(db: Db, kv: Kv, hooks: AdapterHooks, options: AdapterOptions = {}): AdapterConstructor {
  const { revokeGrant } = hooks;
  const special: Record<string, ModelStore> = {
    Session: sessionStore(kv, 'Session'),
    Interaction: sessionStore(kv, 'Interaction'),
    Grant: grantStore(db, revokeGrant),
    ReplayDetection: replayStore(db, options.replayHorizonSeconds ?? DEFAULT_REPLAY_HORIZON_SECONDS),
    Client: clientStore(db, hooks),
  };
  const storeOf = (model: string): ModelStore => special[model] ?? artifactStore(db, model, hooks);

  return class StorageAdapter implements Adapter {
    readonly model: string;
    readonly #store: ModelStore;
    constructor(model: string) {
      this.model = model;
      this.#store = storeOf(model);
    }

    upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
      return this.#store.upsert(id, payload, expiresIn);
    }

    async find(id: string): Promise<AdapterPayload | undefined> {
      return storableId(id) ? this.#store.find(id) : undefined;
    }

    async findByUid(uid: string): Promise<AdapterPayload | undefined> {
      if (!storableId(uid)) return undefined;
      const id = await kv.get(`sessionUid:${uid}`);
      return id ? kvFind(kv, 'Session', id) : undefined;
    }

    /** RFC 8628 §3.3: the device code the user's typed code names (see sealDeviceCode). */
    async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
      if (this.model !== 'DeviceCode' || !storableId(userCode)) return undefined;
      const stored = await artifacts.findDeviceCodeByUserCode(db, userCode);
      if (!stored || typeof stored.payload.sealedDeviceCode !== 'string') return undefined;
      const { sealedDeviceCode, ...payload } = stored.payload;
      const consumed = stored.consumedAt ? { consumed: Math.floor(stored.consumedAt.getTime() / 1000) } : {};
      return { ...payload, ...consumed, jti: hooks.unsealDeviceCode(sealedDeviceCode as string) };
    }

    async consume(id: string): Promise<void> {
      if (!storableId(id) || !this.#store.consume) throw new errors.InvalidGrant('unknown token');
      return this.#store.consume(id);
    }

    async destroy(id: string): Promise<void> {
      if (storableId(id)) await this.#store.destroy(id);
    }

    /**
     * oidc-provider calls this for each token model when a grant must die (code or refresh token
     * reuse, revocation). The whole grant is tombstoned: no token of it may outlive the call.
     */
    async revokeByGrantId(grantId: string): Promise<void> {
      readsOf(db)?.clear();
      grantReadsOf(db)?.clear();
      await revokeGrant(grantId);
    }
  };
}

async function kvUpsert(kv: Kv, model: string, id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
  const ttl = (expiresIn ?? DEFAULT_TTL_SECONDS) + STORAGE_GRACE_SECONDS;
  await kv.set(`${model}:${id}`, JSON.stringify(payload), ttl);
  if (model === 'Session' && typeof payload.uid === 'string') await kv.set(`sessionUid:${payload.uid}`, id, ttl);
}

async function kvFind(kv: Kv, model: string, id: string): Promise<AdapterPayload | undefined> {
  const raw = await kv.get(`${model}:${id}`);
  return raw ? (JSON.parse(raw) as AdapterPayload) : undefined;
}

async function grantUpsert(db: Db, id: string, payload: AdapterPayload, expiresIn: number | undefined): Promise<void> {
  const { accountId, clientId } = payload;
  if (typeof accountId !== 'string' || typeof clientId !== 'string') throw new TypeError('grant without account or client');
  const { jti: _id, ...rest } = payload;
  const stored = await upsertGrant(db, { id, account_id: accountId, client_id: clientId, payload: rest }, expiresIn ? expiryDate(expiresIn) : null);
  if (!stored) throw new errors.InvalidGrant('grant is no longer valid');
}

/**
 * How long a single-use marker is kept when nobody says (see replayHorizonSeconds): the longest
 * client assertion CLIENT_ASSERTION_MAX_LIFETIME allows, plus oidc-provider's clock tolerance.
 */
const DEFAULT_REPLAY_HORIZON_SECONDS = 3600 + 15;

/**
 * ReplayDetection.unique() (client assertion jti, DPoP proof jti) is find-then-save. The claim is
 * made here, in find, as one atomic insert: found means already used, and each caller answers a
 * replay with its own error (invalid_client for an assertion, invalid_dpop_proof for a proof). A
 * spent marker stays spent even when the request it came with is then refused (keepRecorded keeps
 * it on rollback, without keeping the rest of the request). It lives in PostgreSQL, so neither a
 * Redis flush nor a restart reopens a replay window, on any instance.
 *
 * A token request with a client assertion and a DPoP proof claims both markers in the
 * assertion's statement, the first of the request (it travels with BEGIN): the proof's check,
 * which oidc-provider makes later, after verifying the proof, then costs no round trip of its
 * own. The rule stays the same: the insert is atomic, so of concurrent requests with one proof
 * exactly one records it (the others wait for its transaction, then find it). The proof's marker
 * is kept on rollback only once its check has come; a request refused before then (a bad proof,
 * a replayed assertion) takes it back with its rollback, as if it had never been claimed, and one
 * that commits without the check (a route that did not make it) takes it back with its COMMIT.
 * (A wait that commits the work early, Db.withoutConnection, makes it durable sooner: at worst
 * one of the client's own jtis is spent by a proof refused later, never a window reopened.)
 * A proof whose jti is the assertion's shares the assertion's marker: this request's own.
 */
async function claimReplay(db: Db, id: string, horizonSeconds: number): Promise<AdapterPayload | undefined> {
  const expiresAt = expiryDate(horizonSeconds);
  const ahead = db.workState<{ proof?: ProofClaimedAhead; first: boolean }>(PROOF_AHEAD, () => ({ first: true }));
  const proof = ahead?.proof;
  if (proof && !proof.used && proof.id === id) {
    proof.used = true;
    if (proof.sameAsAssertion) return undefined;
    if (!proof.recorded) return { jti: id };
    artifacts.keepRecorded(db, id, expiresAt);
    return undefined;
  }
  const proofId = ahead?.first ? proofToClaimAhead(id) : undefined;
  if (ahead) ahead.first = false;
  if (!ahead || proofId === undefined) return (await artifacts.recordOnce(db, id, expiresAt)) ? undefined : { jti: id };
  if (proofId === id) {
    ahead.proof = { id, recorded: true, sameAsAssertion: true, used: false };
    return (await artifacts.recordOnce(db, id, expiresAt)) ? undefined : { jti: id };
  }
  const [assertionRecorded, proofRecorded] = await artifacts.recordPair(db, id, proofId, expiresAt);
  const claimed: ProofClaimedAhead = { id: proofId, recorded: proofRecorded, sameAsAssertion: false, used: false };
  ahead.proof = claimed;
  if (proofRecorded) db.atCommit(() => (claimed.used ? undefined : artifacts.unrecordStatement(proofId)));
  if (!assertionRecorded) return { jti: id };
  artifacts.keepRecorded(db, id, expiresAt);
  return undefined;
}
