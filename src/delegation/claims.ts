/** The delegation claims of an access token: `act` (RFC 8693 §4.1) and `may_act` (§4.4). */
import type { IncomingMessage } from 'node:http';
import Provider from 'oidc-provider';
import { confirmedGenerationOf } from '../http/confirmed-generation.ts';
import type { Db } from '../storage/db.ts';
import { chainOfAct, MAX_DELEGATION_DEPTH, mayActClaim } from './policy.ts';
import { delegatesOf } from './store.ts';

/** Clients whose delegates are kept at most; past that the cache starts over. */
const DELEGATES_CACHE_SIZE = 10_000;

/**
 * A client's delegates, cached per configuration generation as active clients are
 * (src/oauth/oidc-adapter.ts, clientCache): delegates change only by a client update, which bumps
 * the generation in its transaction and announces it before it answers, and an entry is used only
 * by a request whose own generation was confirmed current after it arrived. Any other request
 * (no confirmed generation, or an older one) reads PostgreSQL. One round trip less per token.
 */
function delegatesByGeneration(db: Db) {
  let newest = -1n;
  let entries = new Map<string, string[]>();
  return async (clientId: string, confirmed: string | undefined): Promise<string[]> => {
    if (confirmed === undefined || !/^\d+$/.test(confirmed)) return delegatesOf(db, clientId);
    const generation = BigInt(confirmed);
    if (generation < newest) return delegatesOf(db, clientId);
    if (generation > newest) {
      newest = generation;
      entries = new Map();
    }
    const known = entries.get(clientId);
    if (known) return known;
    const read = await delegatesOf(db, clientId);
    // Read under this generation: kept only if no newer one came meanwhile.
    if (generation === newest) {
      if (entries.size >= DELEGATES_CACHE_SIZE) entries.clear();
      entries.set(clientId, read);
    }
    return read;
  };
}

export interface ClaimedToken {
  kind?: string;
  clientId?: string;
  accountId?: string;
  /** Set by the token exchange before the token is saved; nothing else sets `act`. */
  extra?: Record<string, unknown>;
}

/**
 * `act` as the exchange set it; `may_act` naming the client's delegates when the token is a
 * user's (only those can be exchanged), the chain has room for another exchange, and a delegate
 * is not already in it.
 */
export function delegationClaims(db: Db) {
  const delegates = delegatesByGeneration(db);
  return async (token: ClaimedToken): Promise<Record<string, unknown> | undefined> => {
    if (token.kind !== 'AccessToken' || !token.accountId || !token.clientId) return undefined;
    const act = token.extra?.act;
    const chain = act === undefined ? [token.clientId] : chainOfAct(act);
    const claims: Record<string, unknown> = act === undefined ? {} : { act };
    if (chain.length - 1 < MAX_DELEGATION_DEPTH) {
      const confirmed = confirmedGenerationOf((Provider.ctx as { req?: IncomingMessage } | undefined)?.req);
      const mayAct = mayActClaim((await delegates(token.clientId, confirmed)).filter((d) => !chain.includes(d)));
      if (mayAct) claims.may_act = mayAct;
    }
    return Object.keys(claims).length ? claims : undefined;
  };
}
