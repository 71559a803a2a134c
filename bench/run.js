#!/usr/bin/env node
/**
 * Runs the benchmarks of the performance issue and writes bench/RESULTS.md and bench/pause.svg.
 *
 *   npm run bench                          # everything, 5 runs each (tens of minutes)
 *   node bench/run.js --only pause,copy --runs 7
 *   node bench/run.js --modes quick:single,quick:iterative --sizes 1G,4G --max-pause 1s
 *   node bench/run.js --only pause --topologies nothing-shared --modes quick:iterative --baselines floor
 *   npm run bench:smoke                    # tiny sizes, one run each, results in a temp dir
 *
 * Sections: pause (cross-host quick single/iterative and live on two topologies, live same host,
 * the baselines floor and seed), copy,
 * plan, reaction, takeover (kill -9 of the replica owning a migration, 3 daemons on etcd). Every section's raw samples go to OUT/results/SECTION.json (OUT = bench/, or
 * a temp dir with --smoke, or --out DIR); the report is rebuilt from every section there, so
 * sections can be re-run one at a time. Needs root and the labs (started here when down).
 */
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { MiB, GiB, log, loadavg, machineInfo } = require('./lib/util');

const args = process.argv.slice(2);
if (args.includes('--help') || args.includes('-h')) {
  // the usage is this file's header comment: print it rather than start a bench of tens of minutes
  const head = fs.readFileSync(path.join(__dirname, 'run.js'), 'utf8').split('*/')[0];
  process.stdout.write(
    `${head
      .split('\n')
      .filter((l) => l.startsWith(' *'))
      .map((l) => l.replace(/^ \* ?/, ''))
      .join('\n')}\n`,
  );
  process.exit(0);
}
const flag = (n) => args.includes(`--${n}`);
const opt = (n, def) => {
  const i = args.indexOf(`--${n}`);
  return i >= 0 ? args[i + 1] : def;
};
const smoke = flag('smoke');
const runs = Number(opt('runs', smoke ? 1 : 5));
const only = opt('only', 'plan,reaction,copy,pause,takeover').split(',');
const bytes = (s) => {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`bad size ${s}`);
  return Math.round(Number(m[1]) * { '': 1, K: 1024, M: MiB, G: GiB }[m[2].toUpperCase()]);
};
const listOpt = (n, def) =>
  opt(n, def)
    .split(',')
    .filter((x) => x && x !== 'none');
// --topologies: pause knows nothing-shared and cluster, takeover cross and single; each section
// takes the values it knows (its default when none), a value no section knows is an error
const PAUSE_TOPOLOGIES = ['nothing-shared', 'cluster'];
const TAKEOVER_TOPOLOGIES = ['cross', 'single'];
const topologiesGiven = opt('topologies') === undefined ? undefined : listOpt('topologies');
for (const t of topologiesGiven ?? [])
  if (![...PAUSE_TOPOLOGIES, ...TAKEOVER_TOPOLOGIES].includes(t))
    throw new Error(`unknown topology ${t} (pause: ${PAUSE_TOPOLOGIES}; takeover: ${TAKEOVER_TOPOLOGIES})`);
const topologiesOf = (known, def) => {
  const mine = (topologiesGiven ?? []).filter((t) => known.includes(t));
  return mine.length ? mine : def;
};
const out = path.resolve(
  opt('out', smoke ? fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-bench-smoke-')) : __dirname),
);
const resultsDir = path.join(out, 'results');
fs.mkdirSync(resultsDir, { recursive: true });

async function main() {
  const info = machineInfo();
  log(
    `machine: ${info.nproc} CPUs, ${info.memGiB} GiB, ${info.kernel}, load ${info.loadavg}; output in ${out}`,
  );
  const save = (r) => {
    r.machine = info;
    r.loadAfter ??= loadavg();
    r.smoke = smoke;
    fs.writeFileSync(path.join(resultsDir, `${r.section}.json`), JSON.stringify(r, null, 1));
    if (r.error) {
      log(`${r.section} failed after ${r.results?.length ?? 0} measured runs: ${r.error}`);
      failed = true;
    }
  };
  let failed = false;
  for (const section of only) {
    const t0 = Date.now();
    log(`== ${section}`);
    if (section === 'plan') {
      const { planBench } = require('./plan-bench');
      save(
        planBench(smoke ? { runs, vms: 200, hosts: 20, clusters: 4, quiet: true } : { runs, quiet: true }),
      );
    } else if (section === 'reaction') {
      save(await require('./reaction').reactionBench({ runs }));
    } else if (section === 'copy') {
      save(
        await require('./copy').copyBench({
          runs,
          sizeBytes: bytes(opt('copy-size', smoke ? '64M' : '1G')),
          sparseBytes: bytes(opt('sparse-size', smoke ? '256M' : '8G')),
          sparseAllocBytes: bytes(opt('sparse-alloc', smoke ? '64M' : '512M')),
          sparseRuns: Number(opt('sparse-runs', smoke ? 1 : Math.min(runs, 3))),
        }),
      );
    } else if (section === 'pause') {
      save(
        await require('./pause').pauseBench({
          runs,
          sizes: opt('sizes', smoke ? '64M' : '1G,4G')
            .split(',')
            .map(bytes),
          modes: listOpt('modes', 'quick:single,quick:iterative,live:same,live:cross'),
          topologies: topologiesOf(PAUSE_TOPOLOGIES, PAUSE_TOPOLOGIES),
          baselines: listOpt('baselines', 'floor,seed'),
          maxPause: opt('max-pause', '1s'),
          // policy.quickMemory of the quick runs (live, paused, stateFile); vmplace's default when not given
          ...(opt('quick-memory') ? { quickMemory: opt('quick-memory') } : {}),
          // policy.pauseTransfer of the quick runs (ssh, tcp); vmplace's default when not given
          ...(opt('pause-transfer') ? { pauseTransfer: opt('pause-transfer') } : {}),
          inject: !flag('no-inject'),
          // the guest's own filler writer (MiB/s per disk, vmplace.bulk), instead of or with injection
          guestBulk: Number(opt('guest-bulk', 0)),
          // the guest disks' cache mode (libvirt <driver cache=…>: none, writethrough, …); libvirt's default when not given
          ...(opt('guest-cache') ? { guestCache: opt('guest-cache') } : {}),
        }),
      );
    } else if (section === 'takeover') {
      // the general case (two hosts, no shared storage) and the favourable one (one host);
      // the smoke runs the one-host case once (the two-host lab takes a while to come up)
      const topologies = topologiesOf(TAKEOVER_TOPOLOGIES, smoke ? ['single'] : TAKEOVER_TOPOLOGIES);
      for (const topology of topologies)
        save(
          await require('./takeover').takeoverBench({ runs, smoke, ttl: opt('lease-ttl', '3s'), topology }),
        );
    } else throw new Error(`unknown section ${section} (plan, reaction, copy, pause, takeover)`);
    log(`== ${section} done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
  if (!flag('keep-lab')) await require('./lib/lab').hostsDown();
  require('./report').writeReport(out);
  log(`wrote ${path.join(out, 'RESULTS.md')} and ${path.join(out, 'pause.svg')}`);
  if (failed) process.exitCode = 1;
}

if (require.main === module)
  main().catch((err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  });
