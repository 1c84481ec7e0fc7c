/**
 * Answers while the server starts: the socket listens before the provider is built (keys,
 * scopes and resource servers are read from the database), and a load balancer's or
 * orchestrator's probe in that window must get an answer, not a connection that hangs until it
 * times out. /healthz says the process is alive; everything else, /readyz included, is 503 with
 * Retry-After until `ready` is called.
 */
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { oauthErrorBody, TemporarilyUnavailable } from '../errors.ts';
import { SECURITY_HEADERS } from './security-headers.ts';

const STARTING = new TemporarilyUnavailable('agentauth is starting; try again shortly.');

export interface StartingGate {
  /** The server's one 'request' listener, attached before listen. */
  listener: RequestListener;
  /** From now on every request goes to `handler`. */
  ready(handler: RequestListener): void;
}

function answerWhileStarting(req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '').split('?')[0];
  const alive = (req.method === 'GET' || req.method === 'HEAD') && path === '/healthz';
  const body = JSON.stringify(alive ? { status: 'ok' } : oauthErrorBody(STARTING));
  res.writeHead(alive ? 200 : 503, {
    ...SECURITY_HEADERS,
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    ...(alive ? {} : { 'Retry-After': String(STARTING.retryAfter) }),
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

export function startingGate(): StartingGate {
  let handler: RequestListener | undefined;
  return {
    listener: (req, res) => (handler ? handler(req, res) : answerWhileStarting(req, res)),
    ready(h) {
      handler = h;
    },
  };
}
