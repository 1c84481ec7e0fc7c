/**
 * The audit seals' cryptography. Each row is summarised by a SHA-256 digest of its content; each
 * seal carries the digests of the rows it covers and an HMAC over them and the previous seal's
 * hash, keyed from the key-encryption key, which never sits in the database. Someone who can write
 * the database but does not hold that key cannot rewrite rows or seals so that they verify again.
 */
import { createHash, createHmac, hkdfSync } from 'node:crypto';

/** JSON with object keys sorted at every depth, so equal content always hashes alike. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

export function chainKey(keyEncryptionKey: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', keyEncryptionKey, 'agentauth', 'audit-chain', 32));
}

/** The digest of one audit row: every column, id included. */
export function rowDigest(row: Record<string, unknown>): string {
  return createHash('sha256').update(canonicalJson(row)).digest('hex');
}

export interface SealFields {
  seq: number;
  afterId: number;
  lastId: number;
  rowIds: number[];
  rowDigests: string[];
  sealedAt: string;
  prevHash: string;
}

export function sealHash(key: Buffer, seal: SealFields): string {
  const content = [seal.seq, seal.afterId, seal.lastId, seal.rowIds, seal.rowDigests, seal.sealedAt, seal.prevHash];
  return createHmac('sha256', key).update(canonicalJson(content)).digest('hex');
}
