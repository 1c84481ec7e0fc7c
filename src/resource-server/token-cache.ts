/**
 * What a resource server remembers between requests: introspection answers for a short while
 * (keyed by the token's SHA-256, never the token itself), and the grants it has been told are
 * revoked, so that neither a cached answer nor a still-unexpired JWT of such a grant is accepted.
 */
import { createHash } from 'node:crypto';

export interface Cached<T> {
  value: T;
  grantId: string | undefined;
  /** Epoch milliseconds after which the entry is not used. */
  until: number;
}

const tokenKey = (token: string) => createHash('sha256').update(token).digest('base64url');

export class TokenCache<T> {
  readonly #entries = new Map<string, Cached<T>>();
  readonly #byGrant = new Map<string, Set<string>>();
  /** Revoked grant ids and until when to remember them (epoch ms), oldest first. */
  readonly #revoked = new Map<string, number>();
  readonly #maxEntries: number;
  readonly #rememberRevokedMs: number;

  constructor(options: { maxEntries: number; rememberRevokedSeconds: number }) {
    this.#maxEntries = options.maxEntries;
    this.#rememberRevokedMs = options.rememberRevokedSeconds * 1000;
  }

  get(token: string, now = Date.now()): T | undefined {
    const key = tokenKey(token);
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.until <= now || this.isRevoked(entry.grantId, now)) {
      this.#delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(token: string, entry: Cached<T>): void {
    if (this.isRevoked(entry.grantId)) return;
    const key = tokenKey(token);
    this.#delete(key);
    // Map keeps insertion order, so the first key is the oldest entry.
    while (this.#entries.size >= this.#maxEntries) this.#delete(this.#entries.keys().next().value!);
    this.#entries.set(key, entry);
    if (entry.grantId) {
      const keys = this.#byGrant.get(entry.grantId) ?? new Set<string>();
      keys.add(key);
      this.#byGrant.set(entry.grantId, keys);
    }
  }

  /** Drops every cached answer of the grant and refuses its tokens from now on. */
  revokeGrant(grantId: string, now = Date.now()): number {
    this.#revoked.delete(grantId);
    this.#revoked.set(grantId, now + this.#rememberRevokedMs);
    for (const [id, until] of this.#revoked) {
      if (until > now && this.#revoked.size <= this.#maxEntries) break;
      this.#revoked.delete(id);
    }
    const keys = [...(this.#byGrant.get(grantId) ?? [])];
    for (const key of keys) this.#delete(key);
    return keys.length;
  }

  isRevoked(grantId: string | undefined, now = Date.now()): boolean {
    if (!grantId) return false;
    const until = this.#revoked.get(grantId);
    return until !== undefined && until > now;
  }

  get size(): number {
    return this.#entries.size;
  }

  #delete(key: string): void {
    const entry = this.#entries.get(key);
    if (!entry) return;
    this.#entries.delete(key);
    if (!entry.grantId) return;
    const keys = this.#byGrant.get(entry.grantId);
    keys?.delete(key);
    if (keys?.size === 0) this.#byGrant.delete(entry.grantId);
  }
}
