/** Checks a username and password; unknown users cost the same time as wrong passwords. */
import type { Db } from '../storage/db.ts';
import { DECOY_HASH, verifyPassword } from './passwords.ts';
import { findAccountByUsername } from './store.ts';

const PLAUSIBLE_USERNAME = /^[^\u0000-\u001f]{1,200}$/u;

export async function authenticate(db: Db, username: string, password: string): Promise<string | undefined> {
  const account = PLAUSIBLE_USERNAME.test(username) ? await findAccountByUsername(db, username) : undefined;
  const ok = await verifyPassword(password, account?.passwordHash ?? DECOY_HASH);
  return ok && account && !account.disabled ? account.id : undefined;
}
