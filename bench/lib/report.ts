/** Results as JSON and as a Markdown table with the machine's description. */
import type { Measurement } from './load.ts';
import type { MachineDescription } from './machine.ts';
import { UNITS, type ScenarioName } from './scenarios.ts';
import type { TargetName } from './targets.ts';

export interface ResultRow {
  scenario: ScenarioName;
  target: TargetName;
  /** 'baseline': the pinned three-way comparison; 'processes-N': agentauth with N processes, unpinned; 'large-data': after seeding. */
  series: string;
  unit: string;
  measurement: Measurement;
}

export interface Results {
  startedAt: string;
  finishedAt: string;
  command: string;
  settings: Record<string, unknown>;
  machine: MachineDescription & { loadAverageAfter: number[] };
  seeding?: { tokens: number; grants: number; seconds: number };
  rows: ResultRow[];
}

const TARGET_LABEL: Record<TargetName, string> = {
  agentauth: 'agentauth (Postgres + Redis)',
  before: 'agentauth, --ab-dir checkout',
  peer: 'plain-adapter peer (Postgres + Redis)',
  bare: 'bare oidc-provider (memory)',
  plain: 'node:http fixed body',
};

const pct = (a: number, b: number | undefined) => (b ? `${Math.round((a / b) * 100)} %` : '–');

function find(rows: ResultRow[], series: string, scenario: ScenarioName, target: TargetName): ResultRow | undefined {
  return rows.find((r) => r.series === series && r.scenario === scenario && r.target === target);
}

function line(r: ResultRow, extra: string[]): string {
  const m = r.measurement;
  return `| ${r.scenario} | ${TARGET_LABEL[r.target]} | ${m.rate} ${r.unit} | ${m.p50Ms} | ${m.p99Ms} | ${m.errors} | ${m.cpuMsPerUnit ?? '–'} | ${m.rssPeakMb ?? '–'} | ${extra.join(' | ')} |`;
}

export function markdown(results: Results): string {
  const { machine: m, rows } = results;
  const out: string[] = [
    `# agentauth benchmark, ${results.startedAt.slice(0, 16).replace('T', ' ')} UTC`,
    '',
    `\`${results.command}\``,
    '',
    '## Machine',
    '',
    `- CPU: ${m.cpu}, ${m.cores} cores; RAM ${m.ramGb} GiB; ${m.os}`,
    `- Node ${m.node}; PostgreSQL ${m.postgres}; Redis ${m.redis}`,
    `- Pinning: ${m.pinning}`,
    `- Load average (1, 5, 15 min) before: ${m.loadAverage.join(', ')}; after: ${m.loadAverageAfter.join(', ')} (the machine is shared: compare ratios, not absolute numbers)`,
    `- Settings: ${Object.entries(results.settings)
      .map(([k, v]) => `${k} ${JSON.stringify(v)}`)
      .join(', ')}`,
    '',
  ];
  const scenarios = [...new Set(rows.map((r) => r.scenario))];
  const baseline = rows.filter((r) => r.series === 'baseline');
  if (baseline.length) {
    out.push(
      '## The servers, same scenarios',
      '',
      "p50/p99 in ms (per flow for code-flow, per revocation for revocation); errors are failed requests or flows (non-2xx where 200 was expected); RSS is the server's peak during the measured run, MiB.",
      '',
      'The peer is the same oidc-provider configuration over one PostgreSQL table and Redis, with no transaction, audit or rate limit; its replay check and refresh rotation are find-then-write, not race-safe.',
      '',
      "CPU ms is the server process's CPU time (user + system) per unit: unlike the rate, it hardly moves with the machine's load.",
      '',
      '| scenario | server | rate | p50 | p99 | errors | CPU ms | peak RSS | agentauth / peer | agentauth / bare | agentauth / node:http |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
    );
    for (const scenario of scenarios) {
      const ours = find(rows, 'baseline', scenario, 'agentauth');
      const before = find(rows, 'baseline', scenario, 'before');
      const peer = find(rows, 'baseline', scenario, 'peer');
      const bare = find(rows, 'baseline', scenario, 'bare');
      const plain = find(rows, 'baseline', scenario, 'plain');
      for (const r of [ours, before, peer, bare, plain]) {
        if (!r) continue;
        const ratios =
          r.target === 'agentauth' || r.target === 'before'
            ? [
                pct(r.measurement.rate, peer?.measurement.rate),
                pct(r.measurement.rate, bare?.measurement.rate),
                pct(r.measurement.rate, plain?.measurement.rate),
              ]
            : ['', '', ''];
        out.push(line(r, ratios));
      }
    }
    out.push('');
  }
  const one = rows.filter((r) => r.series === 'processes-1');
  if (one.length) {
    out.push(
      '## One against two agentauth processes (same Postgres and Redis, unpinned)',
      '',
      '| scenario | processes | rate | p50 | p99 | errors | peak RSS (sum) | 2 / 1 |',
      '|---|---|---|---|---|---|---|---|',
    );
    for (const scenario of scenarios) {
      const a = find(rows, 'processes-1', scenario, 'agentauth');
      const b = find(rows, 'processes-2', scenario, 'agentauth');
      for (const [n, r] of [
        [1, a],
        [2, b],
      ] as const) {
        if (!r) continue;
        const mm = r.measurement;
        out.push(
          `| ${scenario} | ${n} | ${mm.rate} ${r.unit} | ${mm.p50Ms} | ${mm.p99Ms} | ${mm.errors} | ${mm.rssPeakMb ?? '–'} | ${n === 2 && a ? pct(mm.rate, a.measurement.rate) : ''} |`,
        );
      }
    }
    out.push('', "With two processes, p50/p99 are the worse of the two instances' (autocannon reports no mergeable histogram).", '');
  }
  const large = rows.filter((r) => r.series === 'large-data');
  if (large.length) {
    const seeded = results.seeding;
    out.push(
      `## agentauth with stored data${seeded ? ` (${seeded.tokens.toLocaleString('en')} tokens, ${seeded.grants.toLocaleString('en')} grants, seeded in ${seeded.seconds} s)` : ''}`,
      '',
      '| scenario | data | rate | p50 | p99 | errors | peak RSS | large / empty |',
      '|---|---|---|---|---|---|---|---|',
    );
    for (const scenario of scenarios) {
      const small = find(rows, 'baseline', scenario, 'agentauth');
      const big = find(rows, 'large-data', scenario, 'agentauth');
      if (small)
        out.push(
          `| ${scenario} | fresh | ${small.measurement.rate} ${small.unit} | ${small.measurement.p50Ms} | ${small.measurement.p99Ms} | ${small.measurement.errors} | ${small.measurement.rssPeakMb ?? '–'} | |`,
        );
      if (big)
        out.push(
          `| ${scenario} | large | ${big.measurement.rate} ${big.unit} | ${big.measurement.p50Ms} | ${big.measurement.p99Ms} | ${big.measurement.errors} | ${big.measurement.rssPeakMb ?? '–'} | ${pct(big.measurement.rate, small?.measurement.rate)} |`,
        );
    }
    out.push('');
  }
  const notes = rows.filter((r) => r.measurement.notes);
  if (notes.length) {
    out.push('## Notes per run', '');
    for (const r of notes) out.push(`- ${r.series} / ${r.scenario} / ${r.target}: ${JSON.stringify(r.measurement.notes)}`);
    out.push('');
  }
  return `${out.join('\n')}\n`;
}

export const unitOf = (scenario: ScenarioName) => UNITS[scenario];
