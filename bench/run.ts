/**
 * `npm run bench`: agentauth on PostgreSQL and Redis against its peer (the same oidc-provider
 * configuration over a plain one-table PostgreSQL adapter and Redis, as community adapters do
 * it), a bare oidc-provider in memory (the library's ceiling) and a node:http server answering a
 * fixed body (the machine's ceiling), scenario by
 * scenario, at fixed connections and duration, after a warm-up. Servers and the load generator
 * are pinned to different cores where the machine allows. Results go to bench/results/ (JSON
 * and Markdown); see docs/performance.md for what bounds each number.
 *
 *   npm run bench -- [--quick] [--seconds 12] [--warmup 3] [--connections 16]
 *     [--scenarios cc-opaque,cc-jwt,refresh,introspection,code-flow,revocation]
 *     [--targets agentauth,peer,bare,plain] [--processes 2] [--data-size large]
 *     [--cpu-prof-dir <dir>] [--no-pin] [--out <dir>] [--server-dir <checkout>] [--ab-dir <checkout>] [--rounds N] [--alternate]
 *     [--node-options <flags>] [--ab-node-options <flags>]
 *
 * --server-dir runs agentauth from another checkout with the same load (before/after);
 * --ab-dir adds agentauth from another checkout as a server of its own ("before") in the same
 * run, scenario by scenario beside this one's (an A/B within one run).
 * --node-options starts every server with these Node flags (agentauth's in place of the ones it
 * runs with, src/node-flags.ts), --ab-node-options the "before" server: `--ab-dir .
 * --ab-node-options=` A/Bs agentauth with its flags against none (the = form for an empty value
 * or one that starts with a dash).
 *
 * DATABASE_URL and REDIS_URL default to postgres://postgres@127.0.0.1:5432/test and
 * redis://127.0.0.1:6379; each run creates (and drops) a database of its own.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    seconds: { type: 'string' },
    warmup: { type: 'string' },
    connections: { type: 'string', default: '16' },
    scenarios: { type: 'string' },
    targets: { type: 'string', default: 'agentauth,peer,bare,plain' },
    processes: { type: 'string', default: '1' },
    'data-size': { type: 'string', default: 'small' },
    tokens: { type: 'string', default: '1000000' },
    grants: { type: 'string', default: '100000' },
    'cpu-prof-dir': { type: 'string' },
    'no-pin': { type: 'boolean', default: false },
    'server-dir': { type: 'string' },
    'ab-dir': { type: 'string' },
    'node-options': { type: 'string' },
    'ab-node-options': { type: 'string' },
    rounds: { type: 'string', default: '1' },
    alternate: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});

process.env.DATABASE_URL ??= 'postgres://postgres@127.0.0.1:5432/test';
process.env.REDIS_URL ??= 'redis://127.0.0.1:6379';

// The test helpers read DATABASE_URL when loaded: import them only now.
const { describeMachine, pin, planPinning } = await import('./lib/machine.ts');
const { SCENARIOS, UNITS, runScenario } = await import('./lib/scenarios.ts');
const { startAgentauth, startBareProvider, startPeerProvider, startPlainHttp } = await import('./lib/targets.ts');
const { markdown } = await import('./lib/report.ts');
const { seedStoredData } = await import('./lib/seed.ts');
type ScenarioName = import('./lib/scenarios.ts').ScenarioName;
type Target = import('./lib/targets.ts').Target;
type TargetName = import('./lib/targets.ts').TargetName;
type ResultRow = import('./lib/report.ts').ResultRow;
type Results = import('./lib/report.ts').Results;
type RunSettings = import('./lib/scenarios.ts').RunSettings;
type RunMemory = import('./lib/scenarios.ts').RunMemory;
type OAuthFixture = import('./lib/oauth.ts').OAuthFixture;

const quick = values.quick;
const scenarios = (values.scenarios?.split(',') ?? [...SCENARIOS]) as ScenarioName[];
for (const s of scenarios) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s}; one of ${SCENARIOS.join(', ')}`);
const targets = values.targets.split(',');
const processes = Number(values.processes);
const largeData = values['data-size'] === 'large';
const log = (line: string) => process.stderr.write(`${line}\n`);

const settings: RunSettings = {
  seconds: Number(values.seconds ?? (quick ? 3 : 12)),
  warmupSeconds: Number(values.warmup ?? (quick ? 1 : 3)),
  connections: Number(values.connections),
  revocationGrants: quick ? 12 : 60,
  tokensPerGrant: 100,
  revocationConcurrency: 4,
  refreshSessions: quick ? 4 : 16,
  log,
};
const flowClients = quick ? 4 : 8;

const pinning = planPinning(!values['no-pin']);
if (pinning.enabled) pin(process.pid, pinning.loadCores);
const allCores = `0-${os.cpus().length - 1}`;
const startedAt = new Date();
const machine = await describeMachine(process.env.DATABASE_URL, process.env.REDIS_URL, pinning);
log(`agentauth bench: ${machine.cpu}, ${machine.cores} cores, load ${machine.loadAverage.join(' ')}; ${pinning.description}`);

const rows: ResultRow[] = [];
let seeding: Results['seeding'];
const shared: RunMemory = {};
const startOptions = {
  serverCores: pinning.serverCores,
  flowClients,
  cpuProfDir: values['cpu-prof-dir'],
  serverDir: values['server-dir'] && path.resolve(values['server-dir']),
  nodeOptions: values['node-options'],
};

/** What each target's earlier scenarios learned (to size later preparations). */
const memories = new Map<Target, RunMemory>();

async function measure(name: string, target: Target, scenario: ScenarioName): Promise<void> {
  const memory = memories.get(target) ?? {};
  memories.set(target, memory);
  memory.requestsPerFlow ??= shared.requestsPerFlow;
  log(`  ${name} / ${scenario} / ${target.name} (${target.urls.length} process${target.urls.length > 1 ? 'es' : ''})`);
  const measurement = await runScenario(scenario, target, settings, memory, shapeFixture(target.urls[0]!));
  rows.push({ scenario, target: target.name, series: name, unit: UNITS[scenario], measurement });
  log(
    `    ${measurement.rate} ${UNITS[scenario]}, p50 ${measurement.p50Ms} ms, p99 ${measurement.p99Ms} ms, errors ${measurement.errors}, CPU ${measurement.cpuMsPerUnit} ms, RSS ${measurement.rssPeakMb} MiB`,
  );
  shared.requestsPerFlow ??= memory.requestsPerFlow;
}

/** The round with the median rate, with every round's rate in its notes. */
function medianRound(list: ResultRow[]): ResultRow {
  if (list.length === 1) return list[0]!;
  const sorted = [...list].sort((a, b) => a.measurement.rate - b.measurement.rate);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  return {
    ...median,
    measurement: {
      ...median.measurement,
      notes: { ...median.measurement.notes, round_rates: list.map((r) => r.measurement.rate), round_cpu_ms: list.map((r) => r.measurement.cpuMsPerUnit) },
    },
  };
}

async function series(name: string, target: Target, list: ScenarioName[]): Promise<void> {
  for (const scenario of list) await measure(name, target, scenario);
}

/** Bodies of the right size for node:http, which reads but never checks them. */
function shapeFixture(url: string): OAuthFixture {
  const id = () => `agt_${randomBytes(16).toString('base64url')}`;
  return {
    issuer: url,
    urls: [url],
    key: { privateKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, kid: 'bench-client' },
    ccClient: id(),
    introspector: id(),
    flowClients: [id()],
    user: { id: 'x', username: 'bench-user', password: 'x' },
    resources: { opaque: 'https://opaque.bench.example/', jwt: 'https://jwt.bench.example/' },
  };
}

function withoutLog({ log: _log, ...rest }: RunSettings): Omit<RunSettings, 'log'> {
  return rest;
}

/** Scenarios a second process can share: one request each, split over both instances. */
const SPLITTABLE: ScenarioName[] = ['cc-opaque', 'cc-jwt', 'refresh', 'introspection'];

// Every server is started first; then each scenario runs on each server in turn, so a change in
// the shared machine's load falls on all of them alike (idle servers cost next to nothing).
const starters: [TargetName, string, () => Promise<Target>][] = [
  ['agentauth', 'agentauth', () => startAgentauth(startOptions)],
  [
    'before',
    `agentauth from ${values['ab-dir']}`,
    async () => ({
      ...(await startAgentauth({ ...startOptions, serverDir: path.resolve(values['ab-dir']!), nodeOptions: values['ab-node-options'] })),
      name: 'before',
    }),
  ],
  ['peer', 'plain-adapter peer', () => startPeerProvider(startOptions)],
  ['bare', 'bare oidc-provider', () => startBareProvider(startOptions)],
  ['plain', 'node:http', () => startPlainHttp(startOptions)],
];
const running: Target[] = [];
try {
  for (const [name, label, start] of starters) {
    if (name === 'before' ? !values['ab-dir'] : !targets.includes(name)) continue;
    log(`starting ${label}`);
    running.push(await start());
  }
  // With --rounds N, the scenario runs N times on each server in turn (A, B, C, A, B, C, …) and
  // each server's median round is kept: a burst of load from elsewhere then spoils one round.
  // With --alternate the scenarios take turns too (round 1: A/x, A/y, round 2: A/x, A/y, …), for
  // a ratio between two scenarios (cc-opaque and cc-opaque-dpop) under the same load.
  const turns = values.alternate ? [scenarios] : scenarios.map((scenario) => [scenario]);
  for (const turn of turns) {
    const rounds = new Map<string, ResultRow[]>();
    for (let round = 0; round < Number(values.rounds); round++) {
      for (const scenario of turn) {
        for (const target of running) {
          await measure('baseline', target, scenario);
          const key = `${scenario}\u0000${target.name}`;
          rounds.set(key, [...(rounds.get(key) ?? []), rows.pop()!]);
        }
      }
    }
    for (const [, list] of rounds) rows.push(medianRound(list));
  }
  const target = running.find((t) => t.name === 'agentauth');
  if (target && processes > 1) {
    const list = scenarios.filter((s) => SPLITTABLE.includes(s));
    target.pinTo(allCores);
    await series('processes-1', target, list);
    for (let i = 1; i < processes; i++) await target.addProcess!();
    target.pinTo(allCores);
    await series(`processes-${processes}`, target, list);
    await target.dropExtraProcesses!();
    target.pinTo(pinning.serverCores);
  }
  if (target && largeData) {
    const tokens = Number(values.tokens);
    const grants = Number(values.grants);
    log(`seeding ${tokens} tokens and ${grants} grants`);
    seeding = { tokens, grants, seconds: await seedStoredData(target.env!.DATABASE_URL!, tokens, grants) };
    log(`  seeded in ${seeding.seconds} s`);
    await series('large-data', target, scenarios);
  }
} finally {
  await Promise.all(running.map((t) => t.stop()));
}

const results: Results = {
  startedAt: startedAt.toISOString(),
  finishedAt: new Date().toISOString(),
  command: `node bench/run.ts ${process.argv.slice(2).join(' ')}`.trim(),
  settings: { ...withoutLog(settings), flowClients, processes, dataSize: values['data-size'] },
  machine: { ...machine, loadAverageAfter: os.loadavg().map((l) => Math.round(l * 100) / 100) },
  seeding,
  rows,
};
const outDir = path.resolve(values.out ?? (quick ? path.join(os.tmpdir(), 'agentauth-bench') : path.join(import.meta.dirname, 'results')));
mkdirSync(outDir, { recursive: true });
let commit = 'nogit';
try {
  commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: import.meta.dirname, encoding: 'utf8' }).trim();
} catch {
  /* not a checkout */
}
const base = path.join(outDir, `${startedAt.toISOString().slice(0, 10)}-${commit}${quick ? '-quick' : ''}`);
writeFileSync(`${base}.json`, `${JSON.stringify(results, null, 2)}\n`);
const table = markdown(results);
writeFileSync(`${base}.md`, table);
process.stdout.write(table);
log(`results: ${base}.json and .md`);
