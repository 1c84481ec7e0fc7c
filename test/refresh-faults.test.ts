/**
 * A quick run of the refresh fault harness (kill -9 during refreshes). The long run, with
 * PostgreSQL and Redis restarts, is `npm run test:faults`.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { runRefreshFaults } from './faults/refresh-harness.ts';

describe('refresh rotation under kill -9', () => {
  it('never forks a family and never logs the agent out', async () => {
    const report = await runRefreshFaults({ iterations: 8, restartServices: false });
    assert.equal(report.kills, 8);
  });
});
