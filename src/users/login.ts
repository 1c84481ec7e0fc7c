/** Checks a username and password; unknown users cost the same time as wrong passwords. */
import type { Db } from '../storage/db.ts';
import type { HashQueue } from './hash-queue.ts';
import { DECOY_HASH, verifyPassword } from './passwords.ts';
import { findAccountByUsername, type Account } from './store.ts';

/** The one authentication context agentauth's sign-in gives: a password, typed at our login page (RFC 9470 acr). */
export const PASSWORD_ACR = 'urn:agentauth:acr:password';

const PLAUSIBLE_USERNAME = /^[^\u0000-\u001f]{1,200}$/u;

/** The account a typed name names, if any (looked up before any limit is counted). */
export async function accountNamed(db: Db, username: string): Promise<Account | undefined> {
  return PLAUSIBLE_USERNAME.test(username) ? findAccountByUsername(db, username) : undefined;
}

/**
 * Whether `password` opens `account` (enabled). The hash waits its turn in `queue` and runs with
 * no database connection held: a burst of sign-ins must not take the pool from token requests.
 */
export async function passwordOpens(db: Db, queue: HashQueue, account: Account | undefined, password: string): Promise<boolean> {
  const ok = await db.withoutConnection(() => queue.run(() => verifyPassword(password, account?.passwordHash ?? DECOY_HASH)));
  return ok && account !== undefined && !account.disabled;
}
