/** The delegation claims of an access token: `act` (RFC 8693 §4.1) and `may_act` (§4.4). */
import type { Db } from '../storage/db.ts';
import { chainOfAct, MAX_DELEGATION_DEPTH, mayActClaim } from './policy.ts';
import { delegatesOf } from './store.ts';

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
  return async (token: ClaimedToken): Promise<Record<string, unknown> | undefined> => {
    if (token.kind !== 'AccessToken' || !token.accountId || !token.clientId) return undefined;
    const act = token.extra?.act;
    const chain = act === undefined ? [token.clientId] : chainOfAct(act);
    const claims: Record<string, unknown> = act === undefined ? {} : { act };
    if (chain.length - 1 < MAX_DELEGATION_DEPTH) {
      const mayAct = mayActClaim((await delegatesOf(db, token.clientId)).filter((d) => !chain.includes(d)));
      if (mayAct) claims.may_act = mayAct;
    }
    return Object.keys(claims).length ? claims : undefined;
  };
}
