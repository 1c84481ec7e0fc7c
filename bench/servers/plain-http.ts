/**
 * The machine's ceiling for the benchmark: node:http answering every request with one fixed
 * JSON body the size of a token response, after reading the request body (as a server must).
 *
 *   PORT=<port> node bench/servers/plain-http.ts
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const BODY = Buffer.from(
  JSON.stringify({
    access_token: 'x'.repeat(43),
    token_type: 'Bearer',
    expires_in: 600,
    scope: 'bench:read',
  }),
);

const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': BODY.length, 'cache-control': 'no-store' });
    res.end(BODY);
  });
});
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  process.stdout.write(`plain node:http listening on ${(server.address() as AddressInfo).port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
