/**
 * `agentauth init`: the secrets a PostgreSQL deployment needs (KEY_ENCRYPTION_KEY, COOKIE_KEYS),
 * generated into a .env file that docker compose reads. A value already in the file is never
 * replaced: it may be the key that encrypts every signing key in the database.
 */
import { randomBytes } from 'node:crypto';
import { appendFile, chmod, readFile } from 'node:fs/promises';

const SECRETS = ['KEY_ENCRYPTION_KEY', 'COOKIE_KEYS'] as const;

const definedIn = (text: string, name: string) => new RegExp(`^\\s*(export\\s+)?${name}\\s*=\\s*\\S`, 'm').test(text);

export async function writeEnvSecrets(file: string): Promise<{ file: string; added: string[]; kept: string[] }> {
  const existing = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return '';
    throw err;
  });
  const kept = SECRETS.filter((name) => definedIn(existing, name));
  const added = SECRETS.filter((name) => !kept.includes(name));
  if (added.length > 0) {
    const lines = added.map((name) => `${name}=${randomBytes(32).toString('base64url')}`);
    const separator = existing === '' || existing.endsWith('\n') ? '' : '\n';
    await appendFile(file, `${separator}${lines.join('\n')}\n`, { mode: 0o600 });
  }
  await chmod(file, 0o600).catch(() => {});
  return { file, added: [...added], kept: [...kept] };
}
