/**
 * PGlite allows one process per data directory. The lock file holds the owner's pid; a lock
 * whose process is gone is taken over, a live one is refused with a clear message.
 */
import { mkdirSync, openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { AgentauthError } from '../errors.ts';

export class DataDirLockedError extends AgentauthError {
  readonly pid: number;
  constructor(dir: string, pid: number) {
    super(503, 'data_directory_locked', `${dir} is in use by another agentauth process (pid ${pid}); only one process may open the embedded database`, {
      expose: true,
    });
    this.pid = pid;
  }
}

export interface DataDirLock {
  release(): void;
}

const lockPath = (dir: string) => path.join(dir, 'agentauth.lock');

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid holding the data directory, if a live process holds it. */
export function lockHolder(dir: string): number | undefined {
  try {
    const pid = Number(readFileSync(lockPath(dir), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function lockDataDir(dir: string): DataDirLock {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = lockPath(dir);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return { release: () => rmSync(file, { force: true }) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = lockHolder(dir);
      if (holder !== undefined) throw new DataDirLockedError(dir, holder);
      rmSync(file, { force: true }); // stale: its process is gone
    }
  }
  throw new Error(`could not lock ${dir}`);
}
