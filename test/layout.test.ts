/**
 * The layout docs/architecture.md describes is the layout of src/: every folder is in its table,
 * imports go only to the same row or a lower one, folders import one another without cycles,
 * storage/ imports no feature and the shipped resource-server helper imports nothing of the server.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

const ROOT = path.resolve(import.meta.dirname, '..');
const SRC = path.join(ROOT, 'src');

/** `src/x/…` → `x`; `src/x.ts` → `x.ts`. */
const unitOf = (file: string) => path.relative(SRC, file).split(path.sep)[0]!;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(full);
    return e.name.endsWith('.ts') ? [full] : [];
  });
}

/** Unit → the units it imports (relative imports only; packages are not ours to order). */
function importGraph(): Map<string, Map<string, string[]>> {
  const graph = new Map<string, Map<string, string[]>>();
  for (const file of sourceFiles(SRC)) {
    const from = unitOf(file);
    const edges = graph.get(from) ?? new Map<string, string[]>();
    graph.set(from, edges);
    for (const [, spec] of readFileSync(file, 'utf8').matchAll(/from '(\.[^']+)'/g)) {
      const to = unitOf(path.resolve(path.dirname(file), spec!));
      if (to !== from) edges.set(to, [...(edges.get(to) ?? []), path.relative(SRC, file)]);
    }
  }
  return graph;
}

/** The layout table of docs/architecture.md: unit → its row (0 is the ground). */
function documentedRows(): Map<string, number> {
  const doc = readFileSync(path.join(ROOT, 'docs/architecture.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Layout'), doc.indexOf('\n## ', doc.indexOf('## Layout') + 1));
  const rows = new Map<string, number>();
  const lines = section.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| Layer') && !l.startsWith('|---'));
  for (const [row, line] of lines.entries()) {
    const folders = line.split('|')[2]!;
    for (const [, unit] of folders.matchAll(/`src\/([^`/]+)\/?`/g)) rows.set(unit!, row);
  }
  return rows;
}

describe('the source layout', () => {
  const graph = importGraph();
  const rows = documentedRows();

  it('lists every folder and top-level file of src/ in docs/architecture.md, and nothing that is not there', () => {
    const units = new Set(readdirSync(SRC).filter((name) => !name.endsWith('.d.ts')));
    assert.deepEqual([...rows.keys()].sort(), [...units].sort());
  });

  it('imports only from the same row of the layout or a lower one', () => {
    const upward: string[] = [];
    for (const [from, edges] of graph) {
      for (const [to, files] of edges) {
        if (rows.get(to)! > rows.get(from)!) upward.push(`${files[0]} imports ${to} (a higher row)`);
      }
    }
    assert.deepEqual(upward, []);
  });

  it('has no import cycle between folders', () => {
    const reaches = (start: string, goal: string): boolean => {
      const seen = new Set<string>();
      const stack = [start];
      while (stack.length) {
        const unit = stack.pop()!;
        if (unit === goal) return true;
        if (seen.has(unit)) continue;
        seen.add(unit);
        stack.push(...(graph.get(unit)?.keys() ?? []));
      }
      return false;
    };
    const cycles: string[] = [];
    for (const [from, edges] of graph) {
      for (const [to, files] of edges) if (reaches(to, from)) cycles.push(`${from} -> ${to} (${files[0]})`);
    }
    assert.deepEqual(cycles, []);
  });

  it('keeps storage/ generic and the resource-server helper free of the server', () => {
    assert.deepEqual([...(graph.get('storage')?.keys() ?? [])], ['errors.ts']);
    assert.deepEqual([...(graph.get('resource-server')?.keys() ?? [])], []);
  });
});

/**
 * Test files run side by side (`--test-concurrency=2`, and the fault run) on one Redis: each
 * deployment has its own REDIS_KEY_PREFIX, and a suite that flushed the whole Redis wiped the
 * interactions of whatever ran beside it ("interaction session not found" at a login POST, seen
 * twice in CI: the DPoP suite's FLUSHALL). A suite that must lose Redis uses loseDeploymentRedis.
 */
describe('the test suites', () => {
  it('interaction session not found: no test flushes the whole Redis that other suites share', () => {
    const flushing = sourceFiles(path.join(ROOT, 'test'))
      .filter((file) => /\.flushall\(|\.flushdb\(|['"]flushall['"]|['"]flushdb['"]/i.test(readFileSync(file, 'utf8')))
      .map((file) => path.relative(ROOT, file));
    assert.deepEqual(flushing, []);
  });
});
