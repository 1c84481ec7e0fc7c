/**
 * Test hosts reached as a deployment reaches an agent or resource server: by host name, over
 * https, at an address of their own. Each host is a network namespace joined to this one by a
 * veth pair (10.213.x.y/30, private space that ALLOWED_PRIVATE_NETWORKS opens), named in
 * /etc/hosts (so the system resolver answers, as in production) and holding a certificate from a
 * test CA that the server trusts through NODE_EXTRA_CA_CERTS. Inside the namespace a TCP
 * forwarder passes port 443 back to an https server in the test process, so the test keeps its
 * handler in hand. Needs root and iproute2; tests skip with `testHostsUnavailable` otherwise.
 * Everything is removed afterwards (and leftovers of dead test processes on the next start).
 * All traffic stays on this machine.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import type http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** Every test host's address lies in this network. */
export const TEST_HOST_NETWORK = '10.213.0.0/16';
const HOSTS_FILE = '/etc/hosts';
const MARK = '# agentauth-test-host pid=';
const NETNS_PREFIX = 'aat';

function probe(): string | undefined {
  if (process.getuid?.() !== 0) return 'test hosts need root (network namespaces)';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
  } catch {
    return 'test hosts need iproute2 (ip netns) and openssl';
  }
  return undefined;
}

/** Why test hosts cannot be made here, or undefined when they can. */
export const testHostsUnavailable: string | undefined = probe();

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** /etc/hosts is shared by every test process: edits are made under a lock and renamed into place. */
function editHostsFile(edit: (lines: string[]) => string[]): void {
  const lock = `${HOSTS_FILE}.agentauth-lock`;
  for (let i = 0; ; i += 1) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      if (i > 500) rmdirSync(lock); // a lock left by a killed process
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
  try {
    const lines = readFileSync(HOSTS_FILE, 'utf8')
      .split('\n')
      .filter((l, i, all) => l !== '' || i < all.length - 1);
    const kept = edit(lines.filter((l) => !l.includes(MARK) || alive(Number(l.split(MARK)[1]?.split(' ')[0]))));
    const tmp = `${HOSTS_FILE}.agentauth-${process.pid}`;
    writeFileSync(tmp, `${kept.join('\n')}\n`, { mode: 0o644 });
    renameSync(tmp, HOSTS_FILE);
  } finally {
    rmdirSync(lock);
  }
}

/** Namespaces (and so their veth pairs) of test processes that died without cleaning up. */
function removeLeftoverNamespaces(): void {
  const names = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '');
  for (const name of names) {
    const pid = new RegExp(`^${NETNS_PREFIX}(\\d+)x`).exec(name)?.[1];
    if (pid && !alive(Number(pid))) execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  }
}

interface Ca {
  dir: string;
  certFile: string;
  keyFile: string;
}
let ca: Ca | undefined;

/** The test CA of this process, made on first use. */
export function testCa(): Ca {
  if (ca) return ca;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'agentauth-test-ca-'));
  const keyFile = path.join(dir, 'ca.key');
  const certFile = path.join(dir, 'ca.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '2',
      '-subj',
      '/CN=agentauth test CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign',
    ],
    { stdio: 'ignore' },
  );
  ca = { dir, certFile, keyFile };
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return ca;
}

function issueCertificate(hostname: string): { key: string; cert: string } {
  const { dir, certFile, keyFile } = testCa();
  const base = path.join(dir, hostname);
  writeFileSync(`${base}.ext`, `subjectAltName=DNS:${hostname}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  execFileSync(
    'openssl',
    ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${hostname}`],
    { stdio: 'ignore' },
  );
  execFileSync(
    'openssl',
    [
      'x509',
      '-req',
      '-in',
      `${base}.csr`,
      '-CA',
      certFile,
      '-CAkey',
      keyFile,
      '-CAcreateserial',
      '-out',
      `${base}.pem`,
      '-days',
      '2',
      '-extfile',
      `${base}.ext`,
    ],
    { stdio: 'ignore' },
  );
  return { key: readFileSync(`${base}.key`, 'utf8'), cert: readFileSync(`${base}.pem`, 'utf8') };
}

/** What a server needs to call test hosts: trust in the test CA, and their network opened. */
export function testHostEnv(): NodeJS.ProcessEnv {
  return { NODE_EXTRA_CA_CERTS: testCa().certFile, ALLOWED_PRIVATE_NETWORKS: TEST_HOST_NETWORK };
}

export interface TestHost {
  hostname: string;
  /** https://hostname (port 443). */
  origin: string;
  /** The host's address (in TEST_HOST_NETWORK). */
  address: string;
  /** The https server in this process that the host forwards to. */
  server: https.Server;
  close(): Promise<void>;
}

let made = 0;

function sh(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * A host named `<label>-<random>.agentauth.test` whose https requests reach `handler`.
 * `resolveTo` names it with another address instead (e.g. 127.0.0.1), to test refusals.
 */
export async function createTestHost(label: string, handler: http.RequestListener, options: { resolveTo?: string } = {}): Promise<TestHost> {
  if (testHostsUnavailable) throw new Error(testHostsUnavailable);
  if (made === 0) removeLeftoverNamespaces();
  made += 1;
  const id = randomBytes(3).toString('hex');
  const hostname = `${label}-${id}.agentauth.test`;
  const slot = randomBytes(2).readUInt16BE() % 16384;
  const [third, fourth] = [slot >> 6, (slot & 63) * 4];
  const near = `10.213.${third}.${fourth + 1}`;
  const far = `10.213.${third}.${fourth + 2}`;
  const ns = `${NETNS_PREFIX}${process.pid}x${id}`;
  const [outer, inner] = [`aa${id}h`, `aa${id}n`];

  const { key, cert } = issueCertificate(hostname);
  const server = https.createServer({ key, cert }, handler);
  let forwarder: ChildProcess | undefined;
  const close = async () => {
    forwarder?.kill('SIGKILL');
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    for (const args of [
      ['link', 'del', outer],
      ['netns', 'del', ns],
    ]) {
      try {
        sh(args);
      } catch {
        /* already gone */
      }
    }
    editHostsFile((lines) => lines.filter((l) => !l.includes(` ${hostname} `)));
  };
  try {
    sh(['netns', 'add', ns]);
    sh(['link', 'add', outer, 'type', 'veth', 'peer', 'name', inner]);
    sh(['link', 'set', inner, 'netns', ns]);
    sh(['addr', 'add', `${near}/30`, 'dev', outer]);
    sh(['link', 'set', outer, 'up']);
    sh(['-n', ns, 'addr', 'add', `${far}/30`, 'dev', inner]);
    sh(['-n', ns, 'link', 'set', inner, 'up']);
    sh(['-n', ns, 'link', 'set', 'lo', 'up']);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, near, resolve);
    });
    const port = (server.address() as AddressInfo).port;
    forwarder = await startForwarder(ns, far, near, port);
    editHostsFile((lines) => [...lines, `${options.resolveTo ?? far} ${hostname} ${MARK}${process.pid}`]);
  } catch (err) {
    await close();
    throw err;
  }
  return { hostname, origin: `https://${hostname}`, address: far, server, close };
}

/** A TCP forwarder inside the namespace: far:443 → near:port (the test process's https server). */
function startForwarder(ns: string, listenOn: string, target: string, port: number): Promise<ChildProcess> {
  const script = `
    const net = require('node:net');
    net.createServer((c) => {
      const u = net.connect(${port}, ${JSON.stringify(target)});
      c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
      c.pipe(u).pipe(c);
    }).listen(443, ${JSON.stringify(listenOn)}, () => console.log('ready'));`;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d;
    });
    child.stdout!.once('data', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`forwarder in ${ns} exited with ${code}: ${err}`)));
  });
}

/** Removes this process's lines from /etc/hosts if a test forgot to close a host. */
process.once('exit', () => {
  if (made > 0 && existsSync(HOSTS_FILE)) {
    try {
      editHostsFile((lines) => lines.filter((l) => !l.includes(`${MARK}${process.pid}`)));
    } catch {
      /* best effort */
    }
  }
});
