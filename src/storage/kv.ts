/**
 * What may be lost: browser sessions, interactions, caches and pub/sub between instances.
 * Redis when REDIS_URL is set; an in-process store on the embedded default (one process only).
 */
import { EventEmitter } from 'node:events';
import { Redis } from 'ioredis';
import { unobserved, type StorageErrorKind, type StorageObserver } from './observer.ts';

export interface Kv {
  readonly kind: 'redis' | 'memory';
  get(key: string): Promise<string | null>;
  set(key: string, value: string, ttlSeconds: number): Promise<void>;
  del(key: string): Promise<void>;
  /** Adds one to a counter that expires ttlSeconds after its first increment; returns the count. */
  incr(key: string, ttlSeconds: number): Promise<number>;
  /** Takes one back from a counter (an event counted ahead that did not happen); never creates it. */
  decr(key: string): Promise<void>;
  publish(channel: string, message: string): Promise<void>;
  subscribe(channel: string, onMessage: (message: string) => void): Promise<void>;
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

/** ioredis's own timeout message marks a command that ran out of time; the rest are lost or refused connections or bad replies. */
const redisErrorKind = (err: unknown): StorageErrorKind => {
  const message = (err as { message?: unknown })?.message;
  if (typeof message === 'string' && message.includes('Command timed out')) return 'timeout';
  return (err as { name?: unknown })?.name === 'ReplyError' ? 'query' : 'connection';
};

export async function createRedisKv(url: string, prefix: string, observer: StorageObserver = unobserved): Promise<Kv> {
  /** Reports a failed command, then fails as it did. */
  const counted = async <T>(command: Promise<T>): Promise<T> => {
    try {
      return await command;
    } catch (err) {
      observer.error(redisErrorKind(err));
      throw err;
    }
  };
  // Fail fast instead of queueing while Redis is away: a request errors cleanly, never hangs.
  const options = { keyPrefix: prefix, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 2_000 };
  // Commands issued in the same tick by concurrent requests leave in one write: under load, far
  // fewer system calls than one write per command.
  const redis = new Redis(url, { ...options, enableAutoPipelining: true }) as Redis & {
    countWithExpiry(key: string, ttlSeconds: number): Promise<number>;
  };
  // INCR, and an expiry where the counter has none (NX: a later increment never extends it).
  redis.defineCommand('countWithExpiry', {
    numberOfKeys: 1,
    lua: "local n = redis.call('INCR', KEYS[1]) redis.call('EXPIRE', KEYS[1], ARGV[1], 'NX') return n",
  });
  const subscriber = new Redis(url, { ...options, keyPrefix: undefined, enableOfflineQueue: true, commandTimeout: undefined });
  redis.on('error', () => observer.error('connection'));
  subscriber.on('error', () => observer.error('connection'));
  await redis.connect();
  const handlers = new Map<string, (message: string) => void>();
  subscriber.on('message', (channel: string, message: string) => handlers.get(channel)?.(message));
  return {
    kind: 'redis',
    get: (key) => counted(redis.get(key)),
    async set(key, value, ttlSeconds) {
      await counted(redis.set(key, value, 'EX', Math.max(1, Math.ceil(ttlSeconds))));
    },
    async del(key) {
      await counted(redis.del(key));
    },
    async incr(key, ttlSeconds) {
      // One script (EVALSHA): atomic like MULTI/INCR/EXPIRE/EXEC, one command instead of four.
      const count = await counted(redis.countWithExpiry(key, Math.max(1, Math.ceil(ttlSeconds))));
      return Number(count);
    },
    async decr(key) {
      // Only an existing counter: a DECR after expiry would leave a -1 with no TTL behind.
      await redis.eval("if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end return 0", 1, key);
    },
    async publish(channel, message) {
      await counted(redis.publish(prefix + channel, message));
    },
    async subscribe(channel, onMessage) {
      handlers.set(prefix + channel, onMessage);
      if (subscriber.status === 'wait') await subscriber.connect();
      await counted(subscriber.subscribe(prefix + channel));
    },
    async ping() {
      try {
        return (await counted(redis.ping())) === 'PONG';
      } catch {
        return false;
      }
    },
    async close() {
      redis.disconnect();
      subscriber.disconnect();
    },
  };
}

export function createMemoryKv(): Kv {
  const entries = new Map<string, { value: string; expiresAt: number }>();
  const bus = new EventEmitter();
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [key, entry] of entries) if (entry.expiresAt <= now) entries.delete(key);
  }, 60_000);
  sweep.unref();
  return {
    kind: 'memory',
    async get(key) {
      const entry = entries.get(key);
      if (!entry || entry.expiresAt <= Date.now()) return null;
      return entry.value;
    },
    async set(key, value, ttlSeconds) {
      entries.set(key, { value, expiresAt: Date.now() + ttlSeconds * 1000 });
    },
    async del(key) {
      entries.delete(key);
    },
    async incr(key, ttlSeconds) {
      const entry = entries.get(key);
      const live = entry && entry.expiresAt > Date.now() ? entry : { value: '0', expiresAt: Date.now() + ttlSeconds * 1000 };
      live.value = String(Number(live.value) + 1);
      entries.set(key, live);
      return Number(live.value);
    },
    async decr(key) {
      const entry = entries.get(key);
      if (entry && entry.expiresAt > Date.now()) entry.value = String(Number(entry.value) - 1);
    },
    async publish(channel, message) {
      bus.emit(channel, message);
    },
    async subscribe(channel, onMessage) {
      bus.on(channel, onMessage);
    },
    ping: async () => true,
    async close() {
      clearInterval(sweep);
      bus.removeAllListeners();
    },
  };
}
