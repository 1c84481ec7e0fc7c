/**
 * On the embedded default the key-encryption key and cookie keys are generated once and kept
 * under the data directory (mode 0600), so `npm start` needs no setup.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

const secretsSchema = z.object({ keyEncryptionKey: z.string().min(43), cookieKeys: z.array(z.string().min(32)).min(1) });

export interface EmbeddedSecrets {
  keyEncryptionKey: Buffer;
  cookieKeys: string[];
}

export function loadOrCreateSecrets(dataDir: string): EmbeddedSecrets {
  const file = path.join(dataDir, 'secrets.json');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`${file} is unreadable`, { cause: err });
    raw = { keyEncryptionKey: randomBytes(32).toString('base64url'), cookieKeys: [randomBytes(32).toString('base64url')] };
    writeFileSync(file, JSON.stringify(raw, null, 2), { mode: 0o600, flag: 'wx' });
  }
  const parsed = secretsSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`${file} is malformed`);
  return { keyEncryptionKey: Buffer.from(parsed.data.keyEncryptionKey, 'base64url'), cookieKeys: parsed.data.cookieKeys };
}
