/**
 * References that must not dangle: every security test id a test or source file names is
 * explained in docs/security-tests.md, every docs/… path named in code exists, and every
 * relative link in the README and docs/ leads to a file.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from './helpers/server.ts';

const tracked = (...dirs: string[]) =>
  execFileSync('git', ['ls-files', ...dirs], { cwd: ROOT, encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .filter((f) => existsSync(path.join(ROOT, f)));
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
/** Catalogue ids look like R-47, W-21, F-3, INV-1, Z-04 (and not like P-256 or SHA-256). */
const ID = /\b(?:R|W|F|INV|Z)-\d{1,3}\b/g;

describe('references', () => {
  it('every security test id named in test/ or src/ is explained in docs/security-tests.md', () => {
    const documented = new Set(read('docs/security-tests.md').match(ID));
    const missing = tracked('test', 'src')
      .filter((f) => /\.ts$/.test(f))
      .flatMap((f) => (read(f).match(ID) ?? []).filter((id) => !documented.has(id)).map((id) => `${id} in ${f}`));
    assert.deepEqual(missing, []);
  });

  it('every docs/… file named in code exists', () => {
    const missing = tracked('src', 'test', 'examples', 'bench')
      .filter((f) => /\.ts$/.test(f))
      .flatMap((f) =>
        [...read(f).matchAll(/\bdocs\/[\w.-]+\.md\b/g)]
          .map((m) => m[0])
          .filter((doc) => !existsSync(path.join(ROOT, doc)))
          .map((doc) => `${doc} in ${f}`),
      );
    assert.deepEqual(missing, []);
  });

  it('every relative link in the README and docs/ leads to a file', () => {
    const missing = ['README.md', 'CHANGELOG.md', 'examples/README.md', ...tracked('docs')]
      .filter((f) => f.endsWith('.md'))
      .flatMap((f) =>
        [...read(f).matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)]
          .map((m) => m[1]!)
          .filter((target) => !/^[a-z]+:/.test(target))
          .filter((target) => !existsSync(path.join(ROOT, path.dirname(f), target)))
          .map((target) => `${target} in ${f}`),
      );
    assert.deepEqual(missing, []);
  });
});
