/** What the benchmark knows about the machine: cores, pinning, peak memory, versions. */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { Redis } from 'ioredis';
import pg from 'pg';

/** The cores servers and the load generator run on, when the machine has two or more and taskset. */
export interface Pinning {
  enabled: boolean;
  serverCores: string;
  loadCores: string;
  description: string;
}

function hasTaskset(): boolean {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Servers on the first half of the cores, this process (the load generator) on the rest.
 * Postgres and Redis are not ours to pin: they float over every core, the server's included.
 */
export function planPinning(wanted: boolean): Pinning {
  const cores = os.cpus().length;
  if (!wanted || cores < 2 || !hasTaskset()) {
    return { enabled: false, serverCores: '', loadCores: '', description: `none (${cores} cores${wanted ? ', taskset missing or one core' : ', --no-pin'})` };
  }
  const half = Math.floor(cores / 2);
  const serverCores = half === 1 ? '0' : `0-${half - 1}`;
  const loadCores = half === cores - 1 ? String(half) : `${half}-${cores - 1}`;
  return {
    enabled: true,
    serverCores,
    loadCores,
    description: `servers on core ${serverCores}, load generator on core ${loadCores} (taskset); PostgreSQL and Redis unpinned, sharing all ${cores} cores`,
  };
}

/** Pins every thread of a process (threads it starts later inherit the mask). */
export function pin(pid: number, cores: string): void {
  if (cores) execFileSync('taskset', ['-a', '-p', '-c', cores, String(pid)], { stdio: 'ignore' });
}

/** Resets a process's peak RSS (VmHWM) so the next reading covers one scenario only. */
export function resetPeakRss(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    // Not Linux or not allowed: the peak then covers the process's whole life so far.
  }
}

/** CPU time the process has used (user + system, all threads), ms; 0 where /proc is not readable. */
export function cpuMs(pid: number): number {
  try {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return 0;
  }
}

/** Peak resident set size in MiB since start or the last reset. */
export function peakRssMb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
    return Math.round(kb / 1024);
  } catch {
    return 0;
  }
}

export interface MachineDescription {
  cpu: string;
  cores: number;
  ramGb: number;
  node: string;
  postgres: string;
  redis: string;
  os: string;
  loadAverage: number[];
  pinning: string;
}

export async function describeMachine(databaseUrl: string, redisUrl: string, pinning: Pinning): Promise<MachineDescription> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  const postgres = (await client.query<{ server_version: string }>('SHOW server_version')).rows[0]!.server_version;
  await client.end();
  const redis = new Redis(redisUrl, { lazyConnect: true });
  await redis.connect();
  const info = await redis.info('server');
  redis.disconnect();
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    ramGb: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    postgres,
    redis: /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown',
    os: `${os.type()} ${os.release()}`,
    loadAverage: os.loadavg().map((l) => Math.round(l * 100) / 100),
    pinning: pinning.description,
  };
}
