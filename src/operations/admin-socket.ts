/**
 * On the embedded default only the server may open the database, so the CLI asks the running
 * server to run its operation over a Unix socket under the data directory (mode 0600, so only
 * the owner of the data directory can use it). One JSON line in, one JSON line out.
 */
import { chmodSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { AgentauthError, oauthErrorBody } from '../errors.ts';
import { runOperation, type OperationContext } from './operations.ts';

const MAX_REQUEST_BYTES = 256 * 1024;

export const adminSocketPath = (dataDir: string) => path.join(dataDir, 'agentauth.sock');

type Reply = { ok: true; result: unknown } | { ok: false; status: number; error: string; error_description: string };

/** The refusal as it crosses the socket: the same class of error on both sides. */
const refusal = (err: AgentauthError): Reply => ({ ok: false, status: err.status, ...oauthErrorBody(err) });
const unreachable = (description: string) => new AgentauthError(503, 'temporarily_unavailable', description, { expose: true });

export function serveAdminSocket(dataDir: string, ctx: OperationContext, log: Logger, afterChange: () => Promise<unknown>): Promise<net.Server> {
  const file = adminSocketPath(dataDir);
  rmSync(file, { force: true });
  const server = net.createServer((socket) => {
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      if (buffered.length > MAX_REQUEST_BYTES) return void socket.destroy();
      const newline = buffered.indexOf('\n');
      if (newline === -1) return;
      socket.pause();
      handle(buffered.slice(0, newline)).then((reply) => socket.end(`${JSON.stringify(reply)}\n`));
    });
  });

  async function handle(line: string): Promise<Reply> {
    try {
      const request = JSON.parse(line) as { operation?: unknown; input?: unknown };
      if (typeof request.operation !== 'string') return refusal(new AgentauthError(400, 'invalid_request', 'malformed request'));
      const result = await runOperation(ctx, request.operation, request.input);
      await afterChange();
      log.info({ operation: request.operation }, 'admin operation');
      return { ok: true, result };
    } catch (err) {
      if (err instanceof AgentauthError && err.expose) return refusal(err);
      log.error({ err }, 'admin operation failed');
      return refusal(new AgentauthError(500, 'server_error', 'the operation failed; see the server log', { expose: true }));
    }
  }

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(file, () => {
      chmodSync(file, 0o600);
      resolve(server);
    });
  });
}

export function callAdminSocket(dataDir: string, operation: string, input: unknown): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(adminSocketPath(dataDir));
    let response = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify({ operation, input })}\n`));
    socket.on('data', (chunk: string) => {
      response += chunk;
    });
    socket.on('error', (err) => reject(unreachable(`cannot reach the running server's admin socket: ${err.message}`)));
    socket.on('end', () => {
      try {
        const reply = JSON.parse(response) as Reply;
        if (reply.ok) resolve(reply.result);
        else reject(new AgentauthError(reply.status, reply.error, reply.error_description, { expose: true }));
      } catch {
        reject(unreachable('the running server gave no answer'));
      }
    });
  });
}
