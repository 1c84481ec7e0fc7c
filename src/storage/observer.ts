/**
 * What storage reports to whoever watches it (the metrics module, wired in runtime.ts): storage
 * itself imports no feature.
 */
export type StorageErrorKind = 'connection' | 'timeout' | 'query';

export interface StorageObserver {
  /** A failed command or connection, by kind. */
  error(kind: StorageErrorKind): void;
}

export const unobserved: StorageObserver = { error: () => {} };

export interface PoolStats {
  /** Connections open. */
  total: number;
  idle: number;
  /** Callers waiting for a connection. */
  waiting: number;
}
