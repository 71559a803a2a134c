#!/usr/bin/env node
/**
 * Benchmark of the offline half: `validate` + `plan` on a synthetic fleet (10,000 VMs, 500
 * hosts, 20 clusters by default), each run in a fresh process as CI would run it, so the
 * figures include start-up. Reports the median and range of wall time and peak RSS.
 *
 *   npm run build && node bench/plan-bench.js [--runs 5] [--vms 10000] [--hosts 500]
 *   node bench/plan-bench.js --smoke      # a small fleet, one run: proves the script works
 */
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Run validate and plan `runs` times each on a generated fleet; returns the samples. */
function planBench({ runs = 5, vms = 10000, hosts = 500, clusters = 20, quiet = false } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-bench-'));
  try {
    execFileSync(
      process.execPath,
      [
        path.join(__dirname, 'gen-fleet.js'),
        dir,
        '--vms',
        String(vms),
        '--hosts',
        String(hosts),
        '--clusters',
        String(clusters),
      ],
      { stdio: 'ignore' },
    );
    const measure = (cmd) => {
      // GNU time is not everywhere: ask the child for its own peak RSS instead
      const script = `
        const t0 = process.hrtime.bigint();
        require(${JSON.stringify(path.join(ROOT, 'dist/cli/main.js'))})
          .main(['node', 'vmplace', ...${JSON.stringify(cmd)}, ${JSON.stringify(dir)}], { out: () => {}, err: (s) => process.stderr.write(s), isTTY: false })
          .then((code) => {
            const ms = Number(process.hrtime.bigint() - t0) / 1e6;
            process.stdout.write(JSON.stringify({ code, ms, rssMB: process.resourceUsage().maxRSS / 1024 }));
          });`;
      const started = process.hrtime.bigint();
      const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
      const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
      if (r.status !== 0) throw new Error(`${cmd.join(' ')} failed: ${r.stderr}`);
      return { ...JSON.parse(r.stdout), wallMs, load: os.loadavg()[0] };
    };
    const rows = [];
    for (const cmd of [['validate'], ['plan', '--format', 'json']]) {
      const samples = Array.from({ length: runs }, () => measure(cmd));
      if (samples.some((s) => s.code !== 0)) throw new Error(`${cmd[0]} exited ${samples[0].code}`);
      const wall = samples.map((s) => s.wallMs);
      const rss = samples.map((s) => s.rssMB);
      rows.push({ cmd: cmd.join(' '), wall, rss, inProcessMs: samples.map((s) => s.ms) });
      if (!quiet)
        console.log(
          `${cmd.join(' ').padEnd(20)} wall median ${median(wall).toFixed(0)} ms (${Math.min(...wall).toFixed(0)}-${Math.max(...wall).toFixed(0)}), ` +
            `peak RSS median ${median(rss).toFixed(0)} MB (${Math.min(...rss).toFixed(0)}-${Math.max(...rss).toFixed(0)})`,
        );
    }
    if (!quiet)
      console.log(
        `fleet: ${vms} VMs, ${hosts} hosts, ${clusters} clusters, ${runs} run(s) each; goal <= 1000 ms and <= 300 MB per command`,
      );
    return { section: 'plan', date: new Date().toISOString(), opts: { runs, vms, hosts, clusters }, rows };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { planBench };

if (require.main === module) {
  const args = process.argv.slice(2);
  const opt = (name, def) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? Number(args[i + 1]) : def;
  };
  const smoke = args.includes('--smoke');
  planBench({
    runs: smoke ? 1 : opt('runs', 5),
    vms: smoke ? 200 : opt('vms', 10000),
    hosts: smoke ? 20 : opt('hosts', 500),
    clusters: smoke ? 4 : opt('clusters', 20),
  });
}
