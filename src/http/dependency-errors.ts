/**
 * Errors that mean PostgreSQL or Redis is unreachable, as opposed to a bug. A request that
 * meets one answers 503 temporarily_unavailable with Retry-After: the client should retry, and
 * nothing was issued (the transaction rolled back).
 */
import { isStalePreparedStatement } from '../storage/db.ts';

const CONNECTION_MESSAGES = [
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'Connection terminated',
  'connection timeout',
  'timeout exceeded when trying to connect',
  'Connection is closed',
  "Stream isn't writeable",
  'Command timed out',
  'Reached the max retries per request limit',
  'the database system is',
  'terminating connection',
  'Client has encountered a connection error',
];

export function isDependencyError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    // The connection is dropped (src/storage/db.ts); the next one prepares the statement afresh.
    if (isStalePreparedStatement(e)) return true;
    const code = (e as { code?: unknown }).code;
    if (
      typeof code === 'string' &&
      (code.startsWith('08') || code.startsWith('57') || code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'ETIMEDOUT')
    )
      return true;
    // A DbError keeps the driver's message as its detail (src/storage/db.ts).
    const { message, error_detail: detail } = e as { message?: unknown; error_detail?: unknown };
    for (const text of [message, detail]) {
      if (typeof text === 'string' && CONNECTION_MESSAGES.some((m) => text.includes(m))) return true;
    }
  }
  return false;
}
