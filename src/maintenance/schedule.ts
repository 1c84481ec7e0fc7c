/**
 * The server's periodic work: purging expired artifacts and old audit rows (one instance at a
 * time, in bounded batches: purge.ts), and sealing committed audit rows into the hash chain.
 */
import { runMaintenance, type MaintenanceDeps } from './purge.ts';

const PURGE_INTERVAL_MS = 10 * 60 * 1000;
/** How soon committed audit rows join the hash chain. */
const AUDIT_SEAL_INTERVAL_MS = 250;

export function startSchedule(deps: MaintenanceDeps): { stop(): void } {
  const { log, audit } = deps;
  const purge = setInterval(() => {
    runMaintenance(deps).catch((err: unknown) => log.warn({ err }, 'purge failed'));
  }, PURGE_INTERVAL_MS);
  purge.unref();

  let sealing = false;
  const sealer = setInterval(() => {
    if (sealing) return;
    sealing = true;
    audit
      .seal()
      .catch((err: unknown) => log.warn({ err }, 'audit seal failed'))
      .finally(() => {
        sealing = false;
      });
  }, AUDIT_SEAL_INTERVAL_MS);
  sealer.unref();

  return {
    stop() {
      clearInterval(purge);
      clearInterval(sealer);
    },
  };
}
