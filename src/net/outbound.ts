/**
 * Every request agentauth itself sends (jwks_uri, Client ID Metadata Documents, revocation
 * events, back-channel logout) goes through here, under one policy:
 * - https only; http only to a loopback host, and only in development (ALLOW_PRIVATE_FETCH);
 * - the address is checked where it is dialled: every address a name resolves to is filtered by
 *   our own lookup, and the connected socket's address is checked again (IP literals skip the
 *   lookup), so DNS rebinding gains nothing;
 * - loopback, link-local, metadata and special-use addresses are refused; private networks only
 *   inside ALLOWED_PRIVATE_NETWORKS; the development flag widens this to every address but never
 *   bypasses the module;
 * - no redirects, no credentials in URLs, a deadline and a response size limit on every request.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction, Socket } from 'node:net';
import { addressKind, ipLiteral, networkList, type Network } from './addresses.ts';

export interface OutboundPolicy {
  /** ALLOW_PRIVATE_FETCH: development only. Every address may be dialled, and http to loopback. */
  development: boolean;
  /** ALLOWED_PRIVATE_NETWORKS: private-use networks that resource servers and agents live in. */
  allowedPrivateNetworks: readonly Network[];
}

/** A request the policy refuses; its message says why, for `agentauth events list` and logs. */
export class OutboundRefusedError extends Error {
  readonly code = 'ERR_OUTBOUND_REFUSED';
}

export interface OutboundRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** The whole exchange, connect to last byte. */
  timeoutMs?: number;
  /** Largest response body accepted. */
  maxBytes?: number;
  signal?: AbortSignal;
}

export interface OutboundResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface Outbound {
  readonly policy: OutboundPolicy;
  /** Why a URL may not be called (scheme, userinfo, a refused literal address or localhost name), or undefined. */
  urlRefusal(url: URL): string | undefined;
  /** Why an address may not be dialled, or undefined. */
  addressRefusal(ip: string): string | undefined;
  /** A dns.lookup that answers only permitted addresses, for { all: true } and { all: false } alike. */
  readonly lookup: LookupFunction;
  request(url: string | URL, options?: OutboundRequest): Promise<OutboundResponse>;
  /** The same, shaped as fetch for oidc-provider's `fetch` setting (its dispatcher is ignored). */
  fetch(url: string | URL, init?: RequestInit): Promise<Response>;
}

const DEFAULT_TIMEOUT_MS = 5_000;
const DEFAULT_MAX_BYTES = 64 * 1024;
const NULL_BODY_STATUSES = new Set([101, 204, 205, 304]);

const isLocalhostName = (host: string) => host === 'localhost' || host.endsWith('.localhost');

export function createOutbound(policy: OutboundPolicy): Outbound {
  const allowed = networkList(policy.allowedPrivateNetworks);

  const addressRefusal = (ip: string): string | undefined => {
    if (policy.development) return undefined;
    const literal = ipLiteral(ip);
    if (!literal) return `${ip} is not an IP address`;
    const kind = addressKind(literal.address);
    if (kind === 'public') return undefined;
    if (kind === 'private')
      return allowed.check(literal.address, literal.family) ? undefined : `${literal.address} is a private address outside ALLOWED_PRIVATE_NETWORKS`;
    return `${literal.address} is a ${kind} address`;
  };

  const urlRefusal = (url: URL): string | undefined => {
    const host = url.hostname.replace(/\.$/, '').toLowerCase();
    const literal = ipLiteral(host);
    const loopback = isLocalhostName(host) || (literal !== undefined && addressKind(literal.address) === 'loopback');
    if (url.username || url.password) return 'URLs with credentials are not called';
    if (url.protocol === 'http:' && !(policy.development && loopback)) return 'only https URLs are called (http only to loopback, in development)';
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'only https URLs are called';
    if (literal) return addressRefusal(literal.address);
    if (isLocalhostName(host) && !policy.development) return `${host} is a loopback name`;
    return undefined;
  };

  const lookup: LookupFunction = (hostname, options, callback) => {
    // Node's connect asks for { all: true } when it races address families (autoSelectFamily,
    // on by default since Node 20) and for one address otherwise: answer in the shape asked for.
    dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err, '', 0);
      const permitted = addresses.filter((a) => addressRefusal(a.address) === undefined);
      if (permitted.length === 0) {
        const why = addresses[0] ? addressRefusal(addresses[0].address) : 'no address';
        return callback(new OutboundRefusedError(`${hostname} resolves to a refused address: ${why}`), '', 0);
      }
      if (options.all) return callback(null, permitted);
      callback(null, permitted[0]!.address, permitted[0]!.family);
    });
  };

  const checkSocket = (socket: Socket, hostname: string) => {
    const check = () => {
      const why = socket.remoteAddress === undefined ? 'no remote address' : addressRefusal(socket.remoteAddress);
      if (why) socket.destroy(new OutboundRefusedError(`${hostname}: ${why}`));
    };
    if (socket.connecting) socket.once('connect', check);
    else check();
  };

  const request = (target: string | URL, options: OutboundRequest = {}): Promise<OutboundResponse> => {
    const url = new URL(target);
    const refused = urlRefusal(url);
    if (refused) return Promise.reject(new OutboundRefusedError(`${url.origin}: ${refused}`));
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    const deadline = AbortSignal.timeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const signal = options.signal ? AbortSignal.any([options.signal, deadline]) : deadline;
    const transport = url.protocol === 'https:' ? https : http;
    // No user agent, cookies or credentials: nothing that identifies or authorizes this server.
    const headers: Record<string, string> = { ...options.headers };
    if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body));
    return new Promise((resolve, reject) => {
      const req = transport.request(
        url,
        {
          // No connection reuse: these requests are rare, and a receiver closing an idle socket
          // would otherwise fail the next delivery. Each request dials, and is checked, anew.
          method: options.method ?? 'GET',
          headers,
          lookup,
          signal,
          agent: false,
        },
        (res) => {
          const status = res.statusCode ?? 0;
          // Redirects are never followed: a redirect is how an allowed URL would lead elsewhere.
          if (status >= 300 && status < 400) {
            res.resume();
            return reject(new OutboundRefusedError(`${url.origin} answered ${status}: redirects are not followed`));
          }
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > maxBytes) req.destroy(new Error(`${url.origin}: response larger than ${maxBytes} bytes`));
            else chunks.push(chunk);
          });
          res.on('end', () => resolve({ status, headers: res.headers, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      req.on('socket', (socket) => checkSocket(socket, url.hostname));
      req.on('error', (err) => reject(signal.aborted && !(err instanceof OutboundRefusedError) ? new Error(`${url.origin}: timed out`) : err));
      req.end(options.body);
    });
  };

  const fetchLike = async (target: string | URL, init: RequestInit = {}): Promise<Response> => {
    const body = init.body === undefined || init.body === null ? undefined : String(init.body);
    const answer = await request(target, {
      method: init.method,
      headers: Object.fromEntries(new Headers(init.headers)),
      body,
      signal: init.signal ?? undefined,
    });
    const headers = new Headers();
    for (const [name, value] of Object.entries(answer.headers)) {
      for (const v of Array.isArray(value) ? value : value === undefined ? [] : [value]) headers.append(name, v);
    }
    return new Response(NULL_BODY_STATUSES.has(answer.status) ? null : answer.body, { status: answer.status, headers });
  };

  return { policy, urlRefusal, addressRefusal, lookup, request, fetch: fetchLike };
}
