/**
 * Opens what the configuration names: Postgres or PGlite, Redis or the in-process store, and
 * the secrets (from the environment, or generated under the data directory when embedded).
 * The server and the CLI share it, so they always read the same configuration alike.
 */
import { chainKey } from './audit/chain.ts';
import { createAuditLog, type AuditLog } from './audit/log.ts';
import { requestContext } from './http/request-context.ts';
import type { ClientPolicy } from './clients/registration.ts';
import type { Config } from './config.ts';
import { clientAuthAlgs } from './oauth/provider.ts';
import { createPgliteDb, createPostgresDb, type Db } from './storage/db.ts';
import { lockDataDir, type DataDirLock } from './storage/data-dir-lock.ts';
import { loadOrCreateSecrets } from './storage/embedded-secrets.ts';
import { createMemoryKv, createRedisKv, type Kv } from './storage/kv.ts';
import { migrate } from './storage/migrate.ts';
import { metrics } from './metrics/metrics.ts';
import { createOutbound, type Outbound } from './net/outbound.ts';

export interface Runtime {
  db: Db;
  kv: Kv;
  audit: AuditLog;
  clientPolicy: ClientPolicy;
  /** The one way agentauth calls out (jwks_uri, metadata documents, events). */
  outbound: Outbound;
  keyEncryptionKey: Buffer;
  cookieKeys: string[];
  close(): Promise<void>;
}

export async function openRuntime(config: Config): Promise<Runtime> {
  let lock: DataDirLock | undefined;
  let db: Db;
  let secrets: { keyEncryptionKey: Buffer; cookieKeys: string[] };
  if (config.databaseUrl) {
    db = createPostgresDb(config.databaseUrl, {
      observer: { error: metrics.postgresError },
      preparedStatements: config.databasePreparedStatements,
      max: config.databasePoolSize,
    });
    secrets = { keyEncryptionKey: config.keyEncryptionKey!, cookieKeys: config.cookieKeys! };
  } else {
    lock = lockDataDir(config.dataDir);
    try {
      const generated = loadOrCreateSecrets(config.dataDir);
      secrets = { keyEncryptionKey: config.keyEncryptionKey ?? generated.keyEncryptionKey, cookieKeys: config.cookieKeys ?? generated.cookieKeys };
      db = await createPgliteDb(`${config.dataDir}/pglite`, { error: metrics.postgresError });
    } catch (err) {
      lock.release();
      throw err;
    }
  }
  let kv: Kv;
  try {
    await migrate(db);
    kv = config.redisUrl ? await createRedisKv(config.redisUrl, config.redisKeyPrefix, { error: metrics.redisError }) : createMemoryKv();
  } catch (err) {
    await db.close().catch(() => {});
    lock?.release();
    throw err;
  }
  const outbound = createOutbound(config.outbound);
  return {
    db,
    kv,
    audit: createAuditLog(db, chainKey(secrets.keyEncryptionKey), requestContext),
    clientPolicy: { outbound, signingAlgs: clientAuthAlgs(config.clientAuth.allowRs256) },
    outbound,
    ...secrets,
    async close() {
      await kv.close();
      await db.close();
      lock?.release();
    },
  };
}
