/**
 * Several server processes on one PostgreSQL and Redis, behind a round-robin HTTP proxy that
 * listens on the issuer's port and sends each request to the next instance in turn.
 */
import type { ChildProcess } from 'node:child_process';
import http from 'node:http';
import { freePort, newDeployment, runCli, spawnServer, stopProcess, type CliResult } from './server.ts';

export interface TestCluster {
  issuer: string;
  instances: string[];
  env: NodeJS.ProcessEnv;
  cli(args: string[], stdin?: string): Promise<CliResult>;
  stop(): Promise<void>;
}

function roundRobinProxy(port: number, backends: number[]): Promise<http.Server> {
  let next = 0;
  const server = http.createServer((req, res) => {
    const target = backends[next++ % backends.length]!;
    const upstream = http.request({ host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

export async function startCluster(size: number, extraEnv: NodeJS.ProcessEnv = {}): Promise<TestCluster> {
  const deployment = await newDeployment();
  const proxyPort = await freePort();
  const issuer = `http://localhost:${proxyPort}`;
  const env = { ...deployment.env, ISSUER: issuer, ...extraEnv };
  const children: ChildProcess[] = [];
  const ports: number[] = [];
  for (let i = 0; i < size; i++) {
    const port = await freePort();
    const { child } = await spawnServer({ ...env, PORT: String(port) });
    children.push(child);
    ports.push(port);
  }
  const proxy = await roundRobinProxy(proxyPort, ports);
  return {
    issuer,
    instances: ports.map((p) => `http://localhost:${p}`),
    env,
    cli: (args, stdin) => runCli(env, args, stdin),
    async stop() {
      proxy.closeAllConnections();
      proxy.close();
      await Promise.all(children.map((child) => stopProcess(child)));
      await deployment.cleanup();
    },
  };
}
