/**
 * The audit chain's hash: an HMAC over a row's content and the previous row's hash, keyed from
 * the key-encryption key, which never sits in the database. Someone who can write the database
 * but does not hold that key cannot rewrite the chain so that it verifies again.
 */
import { createHmac, hkdfSync } from 'node:crypto';

export const GENESIS_HASH = '0'.repeat(64);

export interface ChainedFields {
  id: number;
  seq: number;
  occurredAt: string;
  eventType: string;
  actorType: string;
  actorId: string | null;
  clientId: string | null;
  accountId: string | null;
  grantId: string | null;
  scopes: string | null;
  resource: string | null;
  ip: string | null;
  userAgent: string | null;
  requestId: string | null;
  outcome: string;
  details: unknown;
  prevHash: string;
}

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

export function chainHash(key: Buffer, fields: ChainedFields): string {
  const content = [
    fields.id, fields.seq, fields.occurredAt, fields.eventType, fields.actorType, fields.actorId, fields.clientId, fields.accountId,
    fields.grantId, fields.scopes, fields.resource, fields.ip, fields.userAgent, fields.requestId, fields.outcome,
    fields.details, fields.prevHash,
  ];
  return createHmac('sha256', key).update(canonicalJson(content)).digest('hex');
}
