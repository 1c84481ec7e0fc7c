/**
 * Which configuration generation was confirmed current after a request arrived (the dispatcher's
 * freshness check, src/http/dispatch.ts), per request: what a cache keyed by generation (clients,
 * src/oauth/oidc-adapter.ts) may trust for that request.
 */
import type { IncomingMessage } from 'node:http';

/** The generation confirmed current after each request arrived (see ensureFresh), by request. */
const confirmedAtArrival = new WeakMap<IncomingMessage, string>();

/** Remembers that this request was dispatched after `generation` was confirmed current. */
export function markConfirmed(req: IncomingMessage, generation: string): void {
  confirmedAtArrival.set(req, generation);
}

/**
 * The generation confirmed current after this request arrived, if one was: what a cache keyed
 * by generation may be trusted under for this request. Undefined for requests to endpoints that
 * do not check (or whose check failed): they read the database.
 */
export function confirmedGenerationOf(req: IncomingMessage | undefined): string | undefined {
  return req ? confirmedAtArrival.get(req) : undefined;
}
