/** The root logger. Redaction is a second line of defence: no code path logs a credential. */
import { pino, type Logger } from 'pino';

export const REDACTED_PATHS = [
  'authorization',
  'cookie',
  'password',
  'client_assertion',
  'code_verifier',
  'refresh_token',
  'access_token',
  'params',
  '*.authorization',
  '*.cookie',
  '*.password',
  '*.client_assertion',
  '*.code_verifier',
  '*.refresh_token',
  '*.access_token',
  '*.params',
  'req.headers.authorization',
  'req.headers.cookie',
];

/** Errors are logged by type, message, stack and code only: libraries hang request data on them. */
function serializeError(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { message: String(err) };
  const code = (err as { code?: unknown }).code;
  return {
    type: err.name,
    message: err.message,
    stack: err.stack,
    ...(typeof code === 'string' ? { code } : {}),
    ...(err.cause !== undefined ? { cause: serializeError(err.cause) } : {}),
  };
}

export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'agentauth' },
    serializers: { err: serializeError },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  });
}
