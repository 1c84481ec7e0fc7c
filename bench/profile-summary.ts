/**
 * Where a server's CPU time went: self time per function and per package from a V8 CPU profile
 * (`npm run bench -- --cpu-prof-dir <dir> …` writes one per server process at exit).
 *
 *   node bench/profile-summary.ts <file.cpuprofile> [--top 25]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' } } });
const profile = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as Profile;

// Only the longest run of seconds the process was busy (≥ 50 % not idle): the load, without
// start-up, setup through the CLI, and shutdown.
// A sample's delta is the time since the one before. On a loaded machine the process (and its
// sampling thread) is descheduled now and then, and the next sample carries the whole pause:
// one sample of 1.5 s once ranked a regular-expression test first. Each sample weighs at most
// four median sampling intervals.
const sortedDeltas = [...profile.timeDeltas].sort((a, b) => a - b);
const cap = 4 * (sortedDeltas[Math.floor(sortedDeltas.length / 2)] ?? 1000);
const weight = (i: number) => Math.min(profile.timeDeltas[i] ?? 0, cap);
const idle = new Set(profile.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id));
const at: number[] = [];
const busyPerSecond: [number, number][] = [];
let clock = 0;
profile.samples.forEach((id, i) => {
  clock += profile.timeDeltas[i] ?? 0;
  at.push(clock);
  const second = Math.floor(clock / 1e6);
  busyPerSecond[second] ??= [0, 0];
  const bucket = busyPerSecond[second]!;
  bucket[idle.has(id) ? 1 : 0] += weight(i);
});
// The longest run of busy seconds.
let best = { start: 0, end: busyPerSecond.length };
for (let second = 0, start = -1; second <= busyPerSecond.length; second++) {
  const [busy, free] = busyPerSecond[second] ?? [0, 1];
  if (busy / (busy + free) >= 0.5) {
    if (start < 0) start = second;
  } else if (start >= 0) {
    if (second - start > best.end - best.start || best.end === busyPerSecond.length) best = { start, end: second };
    start = -1;
  }
}
const from = best.start * 1e6;
const to = best.end * 1e6;

// Self time per node: each sample's delta belongs to the node sampled.
const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => {
  if (at[i]! >= from && at[i]! < to) selfUs.set(id, (selfUs.get(id) ?? 0) + weight(i));
});
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

// Inclusive time per node (itself and everything it called), for our own functions.
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const inclusiveUs = new Map<number, number>();
const inclusive = (id: number): number => {
  const node = nodes.get(id)!;
  const us = (selfUs.get(id) ?? 0) + (node.children ?? []).reduce((n, child) => n + inclusive(child), 0);
  inclusiveUs.set(id, us);
  return us;
};
inclusive(profile.nodes[0]!.id);

/** The package (or our own folder) a script belongs to. */
function packageOf(url: string): string {
  if (!url) return '(native / V8)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith('node:')) return 'node core';
  const own = /\/(src|bench|test)\/(.+?)\/[^/]+$/.exec(url) ?? /\/(src|bench|test)\/([^/]+)$/.exec(url);
  return own ? `${own[1]}/${own[2]}` : url;
}

const byFunction = new Map<string, number>();
const byPackage = new Map<string, number>();
const ownInclusive = new Map<string, number>();
for (const node of profile.nodes) {
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url ? `${url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*?\/(src|bench|test)\//, '$1/')}:${lineNumber + 1}` : '';
  const key = `${functionName || '(anonymous)'} ${where}`.trim();
  // Recursion would count twice; a function's outermost frames are enough for a ranking.
  if (/\/src\//.test(url)) ownInclusive.set(key, Math.max(ownInclusive.get(key) ?? 0, 0) + (inclusiveUs.get(node.id) ?? 0));
  const us = selfUs.get(node.id);
  if (!us) continue;
  byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  byPackage.set(packageOf(url), (byPackage.get(packageOf(url)) ?? 0) + us);
}

const show = (title: string, map: Map<string, number>, top: number) => {
  process.stdout.write(`\n${title}\n`);
  for (const [key, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(`${((us / total) * 100).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}\n`);
  }
};
process.stdout.write(
  `profile: ${((profile.endTime - profile.startTime) / 1e6).toFixed(1)} s; busy window ${from / 1e6}–${to / 1e6} s, ${(total / 1e6).toFixed(1)} s sampled\n`,
);
show('self time by package', byPackage, 20);
show('self time by function', byFunction, Number(values.top));
show('inclusive time of our own functions (src/)', ownInclusive, Number(values.top));
