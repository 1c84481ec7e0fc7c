/**
 * A counter bumped whenever keys or scopes change. Instances compare it on a timer and on a
 * pub/sub nudge, and rebuild their provider when it moved: no restart needed.
 */
import type { Db } from './db.ts';

export async function bumpConfigGeneration(db: Db): Promise<void> {
  await db.query('UPDATE config_generation SET generation = generation + 1 WHERE id = 1');
}

export async function readConfigGeneration(db: Db): Promise<string> {
  const r = await db.query<{ generation: string }>('SELECT generation::text AS generation FROM config_generation WHERE id = 1');
  return r.rows[0]?.generation ?? '0';
}

export const CONFIG_CHANNEL = 'config-changed';
