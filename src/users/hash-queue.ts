/**
 * A bounded queue in front of password hashing. scrypt takes ~100 ms of a libuv thread (four by
 * default, shared with file and DNS work): unbounded, a burst of sign-ins would stall every other
 * request that needs one. At most `concurrency` hashes run at once, at most `maxWaiting` wait;
 * past that the caller is told to come back (503 with Retry-After) instead of queueing forever.
 */
import { TemporarilyUnavailable } from '../errors.ts';

export class HashQueueFull extends TemporarilyUnavailable {
  constructor() {
    super('Too many sign-ins are in progress. Try again in a moment.');
  }
}

export interface HashQueue {
  /** Runs `hash` when a slot is free; throws HashQueueFull when the queue is at its bound. */
  run<T>(hash: () => Promise<T>): Promise<T>;
}

export function createHashQueue(concurrency: number, maxWaiting: number): HashQueue {
  let running = 0;
  const waiting: (() => void)[] = [];

  /** Hands the finished hash's slot to the first waiter, or frees it. */
  const next = () => {
    const resume = waiting.shift();
    if (resume) resume();
    else running--;
  };

  return {
    async run(hash) {
      if (running >= concurrency) {
        if (waiting.length >= maxWaiting) throw new HashQueueFull();
        // The slot is handed over by `next`, so `running` stays counted for us.
        await new Promise<void>((resolve) => waiting.push(resolve));
      } else {
        running++;
      }
      try {
        return await hash();
      } finally {
        next();
      }
    },
  };
}
