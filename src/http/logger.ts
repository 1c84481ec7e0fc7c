/** The root logger. Redaction is a second line of defence: no code path logs a credential. */
import { pino, type Logger } from 'pino';

export const REDACTED_PATHS = [
  'authorization', 'cookie', 'password', 'client_assertion', 'code', 'code_verifier', 'refresh_token', 'access_token',
  '*.authorization', '*.cookie', '*.password', '*.client_assertion', '*.code', '*.code_verifier', '*.refresh_token', '*.access_token',
  'req.headers.authorization', 'req.headers.cookie',
];

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'agentauth' }, redact: { paths: REDACTED_PATHS, censor: '[redacted]' } });
}
