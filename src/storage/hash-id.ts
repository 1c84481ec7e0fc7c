import { createHash } from 'node:crypto';

/** Credentials are stored under the SHA-256 of their value, never the value itself. */
export const hashId = (id: string): Buffer => createHash('sha256').update(id).digest();
