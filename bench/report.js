/**
 * Builds RESULTS.md and pause.svg from the raw samples in OUT/results/*.json (see run.js).
 *
 *   node bench/report.js [OUT]     # default: bench/
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { MiB, GiB, stats } = require('./lib/util');

const f0 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(0) : '–');
const f2 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(2) : '–');
const size = (b) => (b >= GiB ? `${+(b / GiB).toFixed(2)} GiB` : `${+(b / MiB).toFixed(1)} MiB`);
const mmm = (s, f = f0) => (s.n ? `${f(s.median)} (${f(s.min)}–${f(s.max)})` : '–');
const verdict = (ok) => (ok === undefined ? 'n/a' : ok ? '**PASS**' : '**MISS**');

function load(out) {
  const dir = path.join(out, 'results');
  const r = {};
  if (!fs.existsSync(dir)) return r;
  for (const n of fs.readdirSync(dir).filter((x) => x.endsWith('.json')))
    r[n.replace(/\.json$/, '')] = JSON.parse(fs.readFileSync(path.join(dir, n), 'utf8'));
  return r;
}

const MODE_LABEL = {
  'quick:single': 'quick, single round (seed)',
  'quick:iterative': 'quick, iterative (spec.maxPause)',
  'live:same': 'live, same host (blockcopy --pivot)',
  'live:cross': 'live, cross host',
  'base:floor': 'floor: plain virsh save + restore on one host',
  'base:seed': "seed's steps by hand (snapshot, rsync, save, scp, rebase, restore --xml)",
};

const TOPOLOGY_LABEL = {
  'nothing-shared': 'nothing shared (each host its own storage)',
  cluster: 'cluster c1 (shared storage csv)',
  'one-host': 'one host',
};

/** a row's topology; results of before the topologies had only the cluster one */
const topologyOf = (x) => x.topology ?? (x.mode === 'live:same' ? 'one-host' : 'cluster');

/** rows of one mode, size (and topology, when given) that really ran that mode */
function pauseRows(p, mode, sz, topology) {
  return (p?.results ?? []).filter(
    (x) =>
      x.mode === mode &&
      x.sizeBytes === sz &&
      (topology === undefined || topologyOf(x) === topology) &&
      !(mode === 'live:cross' && x.effectiveStrategy !== 'live'),
  );
}

function pauseSummary(p) {
  const sizes = [...new Set((p?.results ?? []).map((x) => x.sizeBytes))].sort((a, b) => a - b);
  const modes = Object.keys(MODE_LABEL).filter((m) => (p?.results ?? []).some((x) => x.mode === m));
  const topologies = ['nothing-shared', 'cluster'].filter((t) =>
    (p?.results ?? []).some((x) => topologyOf(x) === t && !x.mode.startsWith('base:')),
  );
  return { sizes, modes, topologies };
}

/** The plot's series: [mode, topology, colour, shape, filled] */
const SERIES = [
  ['quick:single', 'nothing-shared', '#d62728', 'circle', true],
  ['quick:iterative', 'nothing-shared', '#1f77b4', 'square', true],
  ['live:cross', 'nothing-shared', '#9467bd', 'triangle', true],
  ['quick:single', 'cluster', '#d62728', 'circle', false],
  ['quick:iterative', 'cluster', '#1f77b4', 'square', false],
  ['live:cross', 'cluster', '#9467bd', 'triangle', false],
  ['live:same', 'one-host', '#2ca02c', 'diamond', true],
  ['base:floor', 'one-host', '#000000', 'bar', true],
  ['base:seed', 'nothing-shared', '#8c564b', 'cross', true],
];

function svg(p) {
  const { sizes } = pauseSummary(p);
  const W = 980,
    H = 520,
    L = 80,
    R = 420,
    T = 50,
    B = 60;
  let ymax = 1200;
  for (const [m, t] of SERIES)
    for (const s of sizes) for (const x of pauseRows(p, m, s, t)) ymax = Math.max(ymax, x.pauseQemuMs ?? 0);
  ymax = Math.ceil((ymax * 1.1) / 500) * 500;
  const pw = W - L - R,
    ph = H - T - B;
  const xs = (i) => L + (sizes.length <= 1 ? pw / 2 : (pw * (i + 0.5)) / sizes.length);
  const ys = (v) => T + ph - (v / ymax) * ph;
  const o = [];
  o.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  o.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  o.push(
    `<text x="${L + pw / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">VM pause against disk size (median, whiskers min–max)</text>`,
  );
  // grid and y axis
  const step = ymax <= 3000 ? 250 : ymax <= 6000 ? 500 : 1000;
  for (let v = 0; v <= ymax; v += step) {
    o.push(`<line x1="${L}" y1="${ys(v)}" x2="${L + pw}" y2="${ys(v)}" stroke="#eee"/>`);
    o.push(`<text x="${L - 6}" y="${ys(v) + 4}" text-anchor="end">${v}</text>`);
  }
  o.push(`<line x1="${L}" y1="${T}" x2="${L}" y2="${T + ph}" stroke="black"/>`);
  o.push(`<line x1="${L}" y1="${T + ph}" x2="${L + pw}" y2="${T + ph}" stroke="black"/>`);
  o.push(
    `<text transform="translate(22 ${T + ph / 2}) rotate(-90)" text-anchor="middle">pause (ms): QEMU STOP on source → RESUME on target</text>`,
  );
  sizes.forEach((s, i) => {
    o.push(`<line x1="${xs(i)}" y1="${T + ph}" x2="${xs(i)}" y2="${T + ph + 5}" stroke="black"/>`);
    o.push(`<text x="${xs(i)}" y="${T + ph + 20}" text-anchor="middle">${size(s)} disk (half full)</text>`);
  });
  o.push(
    `<text x="${L + pw / 2}" y="${H - 14}" text-anchor="middle">disk size; 256 MiB RAM; ~10 MB/s written to the disk during the move</text>`,
  );
  // goal lines
  for (const [v, label] of [
    [1000, 'goal quick: 1 s'],
    [100, 'goal live: 100 ms'],
  ]) {
    o.push(
      `<line x1="${L}" y1="${ys(v)}" x2="${L + pw}" y2="${ys(v)}" stroke="#555" stroke-dasharray="6 4"/>`,
    );
    o.push(`<text x="${L + pw - 4}" y="${ys(v) - 4}" text-anchor="end" fill="#555">${label}</text>`);
  }
  const mark = (shape, x, y, c, filled) => {
    const paint = filled ? `fill="${c}"` : `fill="white" stroke="${c}" stroke-width="2"`;
    if (shape === 'circle') return `<circle cx="${x}" cy="${y}" r="5" ${paint}/>`;
    if (shape === 'square') return `<rect x="${x - 5}" y="${y - 5}" width="10" height="10" ${paint}/>`;
    if (shape === 'diamond')
      return `<path d="M${x} ${y - 6} L${x + 6} ${y} L${x} ${y + 6} L${x - 6} ${y} Z" ${paint}/>`;
    if (shape === 'bar') return `<rect x="${x - 7}" y="${y - 2}" width="14" height="4" ${paint}/>`;
    if (shape === 'cross')
      return `<path d="M${x - 5} ${y - 5} L${x + 5} ${y + 5} M${x - 5} ${y + 5} L${x + 5} ${y - 5}" stroke="${c}" stroke-width="2.5" fill="none"/>`;
    return `<path d="M${x} ${y - 6} L${x + 6} ${y + 5} L${x - 6} ${y + 5} Z" ${paint}/>`;
  };
  const gap = Math.min(16, (sizes.length <= 1 ? pw : pw / sizes.length) / (SERIES.length + 1));
  SERIES.forEach(([m, t, c, shape, filled], k) => {
    const pts = [];
    sizes.forEach((s, i) => {
      const st = stats(pauseRows(p, m, s, t).map((x) => x.pauseQemuMs));
      if (!st.n) return;
      const x = xs(i) + (k - (SERIES.length - 1) / 2) * gap;
      pts.push([x, ys(st.median)]);
      o.push(
        `<line x1="${x}" y1="${ys(st.min)}" x2="${x}" y2="${ys(st.max)}" stroke="${c}" stroke-width="1.5"/>`,
      );
      o.push(`<line x1="${x - 4}" y1="${ys(st.min)}" x2="${x + 4}" y2="${ys(st.min)}" stroke="${c}"/>`);
      o.push(`<line x1="${x - 4}" y1="${ys(st.max)}" x2="${x + 4}" y2="${ys(st.max)}" stroke="${c}"/>`);
      o.push(mark(shape, x, ys(st.median), c, filled));
      o.push(`<text x="${x + 7}" y="${ys(st.median) - 6}" fill="${c}" font-size="9">${f0(st.median)}</text>`);
    });
    if (pts.length > 1)
      o.push(
        `<polyline points="${pts.map((q) => q.join(',')).join(' ')}" fill="none" stroke="${c}" stroke-opacity="0.5"${filled ? '' : ' stroke-dasharray="3 3"'}/>`,
      );
  });
  // legend
  const lx = L + pw + 20;
  o.push(`<text x="${lx}" y="${T + 4}" font-weight="bold">strategy · topology</text>`);
  o.push(`<text x="${lx}" y="${T + 20}" fill="#555">filled: nothing shared · hollow: cluster c1</text>`);
  SERIES.forEach(([m, t, c, shape, filled], k) => {
    const y = T + 42 + k * 22;
    const ran = sizes.some((s) => pauseRows(p, m, s, t).length);
    o.push(mark(shape, lx + 6, y - 4, ran ? c : '#bbb', filled));
    const label =
      t === 'one-host'
        ? MODE_LABEL[m].replace(/ \(.*\)$/, '')
        : `${MODE_LABEL[m].replace(/ \(.*\)$/, '')} · ${t}`;
    o.push(
      `<text x="${lx + 18}" y="${y}" fill="${ran ? 'black' : '#999'}">${label}${ran ? '' : ' (not run / n/a)'}</text>`,
    );
  });
  o.push('</svg>');
  return o.join('\n');
}

function writeReport(out) {
  const R = load(out);
  const any = Object.values(R)[0];
  const m = any?.machine ?? {};
  const L = [];
  L.push('# vmplace performance benchmarks: results');
  L.push('');
  L.push(
    `Generated by \`node bench/run.js\` (see bench/README.md for what each bench does and how).${any?.smoke ? ' **SMOKE RUN: tiny sizes, one run each; these are not results.**' : ''}`,
  );
  L.push('');
  L.push('## Machine');
  L.push('');
  L.push(`- date: ${m.date} · vmplace ${m.git}`);
  L.push(`- ${m.nproc} CPUs (${m.cpu}), ${m.memGiB} GiB RAM, kernel ${m.kernel}, Node ${m.node}`);
  L.push(`- ${m.qemu}; libvirt ${m.libvirt}; ${m.rsync}; ${m.openssh}`);
  L.push(`- virtualisation: ${m.kvm}`);
  L.push(
    '- shared machine: other engineers ran tests during these benchmarks. Load average (1, 5, 15 min) per section:',
  );
  for (const [k, v] of Object.entries(R))
    L.push(`  - ${k}: ${v.date}, before ${v.loadBefore ?? v.machine?.loadavg}, after ${v.loadAfter ?? '–'}`);
  L.push('');

  // ---------------------------------------------------------------- summary
  const goals = [];
  const p = R.pause;
  const { sizes, topologies } = pauseSummary(p);
  const pauseStat = (mode, s, t) => stats(pauseRows(p, mode, s, t).map((x) => x.pauseQemuMs));
  const has = (mode, t) => sizes.some((s) => pauseRows(p, mode, s, t).length);
  // issue 14: the headline is two hosts with nothing shared; the cluster beside it
  for (const t of topologies) {
    const head = t === 'nothing-shared';
    for (const mode of ['quick:single', 'quick:iterative']) {
      if (!has(mode, t)) continue;
      for (const s of sizes) {
        const st = pauseStat(mode, s, t);
        goals.push([
          `1. pause, ${MODE_LABEL[mode]}, ${t}, ${size(s)} disk`,
          `${mmm(st)} ms`,
          st.n,
          head ? '≤ 1000 ms' : '≤ 1000 ms (keep or beat)',
          st.n ? f2(st.median / 1000) : '–',
          verdict(st.n ? st.median <= 1000 : undefined),
        ]);
        const fl = pauseStat('base:floor', s);
        if (head && fl.n)
          goals.push([
            `1. pause / floor (same VM's virsh save + restore on one host), ${MODE_LABEL[mode]}, ${t}, ${size(s)}`,
            `${f0(st.median)} / ${f0(fl.median)} ms`,
            Math.min(st.n, fl.n),
            '≤ 1.25',
            st.n ? f2(st.median / fl.median / 1.25) : '–',
            verdict(st.n ? st.median <= 1.25 * fl.median : undefined),
          ]);
      }
      if (sizes.length >= 2) {
        const a = pauseStat(mode, sizes[0], t);
        const b = pauseStat(mode, sizes[sizes.length - 1], t);
        const ratio = a.n && b.n ? b.median / a.median : undefined;
        goals.push([
          `1. pause ratio ${size(sizes[sizes.length - 1])} / ${size(sizes[0])}, ${MODE_LABEL[mode]}, ${t}`,
          f2(ratio),
          Math.min(a.n, b.n),
          '≤ 1.2',
          ratio === undefined ? '–' : f2(ratio / 1.2),
          verdict(ratio === undefined ? undefined : ratio <= 1.2),
        ]);
      }
    }
  }
  for (const mode of ['base:floor', 'base:seed'])
    for (const s of sizes) {
      const st = pauseStat(mode, s);
      if (!st.n) continue;
      goals.push([
        `baseline: ${MODE_LABEL[mode]}, ${size(s)} disk`,
        `${mmm(st)} ms`,
        st.n,
        '(reference)',
        '–',
        'n/a',
      ]);
    }
  for (const [mode, ts] of [
    ['live:same', ['one-host']],
    ['live:cross', topologies],
  ]) {
    for (const t of ts)
      for (const s of sizes) {
        const st = pauseStat(mode, s, t);
        const fell = (p?.results ?? []).find(
          (x) => x.mode === mode && x.sizeBytes === s && topologyOf(x) === t && x.note,
        );
        if (!st.n && !fell) continue;
        goals.push([
          `2. pause, ${MODE_LABEL[mode]}${mode === 'live:cross' ? `, ${t}` : ''}, ${size(s)} disk`,
          st.n ? `${mmm(st)} ms` : `n/a: ${fell.note}`,
          st.n,
          '≤ 100 ms',
          st.n ? f2(st.median / 100) : '–',
          verdict(st.n ? st.median <= 100 : undefined),
        ]);
      }
  }
  const c = R.copy;
  const cs = (kind, method, key = 'ms') =>
    stats((c?.results ?? []).filter((x) => x.kind === kind && x.method === method).map((x) => x[key]));
  if (c) {
    const cp = cs('same-host', 'cp --sparse=always');
    const cps = cs('same-host', 'cp --sparse=always + sync');
    const nv = cs('same-host', 'copyLocal verify:false');
    const v = cs('same-host', 'local transport (verified)');
    // the goal (issue 14): against cp + sync, since every vmplace copy is flushed before its rename
    goals.push([
      `3. same-host copy, copyLocal verify:false vs cp --sparse=always + sync (${size(c.opts.sizeBytes)}, half allocated; bare cp ${mmm(cp)} ms)`,
      `${mmm(nv)} ms vs ${mmm(cps)} ms`,
      nv.n,
      '≥ 0.9× cp + sync',
      f2(cps.median / nv.median),
      verdict(cps.median / nv.median >= 0.9),
    ]);
    goals.push([
      `3. same-host copy, the local transport (verified) vs cp --sparse=always + sync`,
      `${mmm(v)} ms`,
      v.n,
      '≥ 0.9× cp + sync',
      f2(cps.median / v.median),
      verdict(cps.median / v.median >= 0.9),
    ]);
    const rs = cs('cross-host', 'rsync --sparse over ssh');
    const bn = cs('cross-host', 'copyBetweenHosts verify:false');
    const bv = cs('cross-host', 'copyBetweenHosts (sha256)');
    goals.push([
      `3. cross-host copy, copyBetweenHosts verify:false vs rsync over ssh (${size(c.opts.sizeBytes)})`,
      `${mmm(bn)} ms vs ${mmm(rs)} ms`,
      bn.n,
      '≥ 0.9× rsync',
      f2(rs.median / bn.median),
      verdict(rs.median / bn.median >= 0.9),
    ]);
    goals.push([
      `3. cross-host copy, copyBetweenHosts (sha256 verified) vs rsync`,
      `${mmm(bv)} ms`,
      bv.n,
      '≥ 0.9× rsync',
      f2(rs.median / bv.median),
      verdict(rs.median / bv.median >= 0.9),
    ]);
    for (const kind of ['sparse-raw', 'sparse-qcow2']) {
      const rows = c.results.filter((x) => x.kind === kind && x.method === 'copyBetweenHosts verify:false');
      if (!rows.length) continue;
      const tx = stats(rows.map((x) => x.txBytes));
      const rep = stats(rows.map((x) => x.reportedBytes));
      const data = rows[0].dataBytes;
      goals.push([
        `3. sparse ${size(rows[0].bytes)} ${kind.slice(7)} file, ${size(data)} of data (${size(rows[0].allocatedBytes)} allocated): bytes on the wire / data`,
        `interface ${size(tx.median)}, bytesSent ${size(rep.median)}`,
        rows.length,
        '≤ 1.1×',
        f2(tx.median / data),
        verdict(tx.median / data <= 1.1),
      ]);
    }
  }
  const pl = R.plan;
  if (pl) {
    for (const row of pl.rows) {
      const w = stats(row.wall);
      const rss = stats(row.rss);
      goals.push([
        `4. \`vmplace ${row.cmd}\`, ${pl.opts.vms} VMs / ${pl.opts.hosts} hosts: wall time (fresh process)`,
        `${mmm(w)} ms`,
        w.n,
        '≤ 1000 ms',
        f2(w.median / 1000),
        verdict(w.median <= 1000),
      ]);
      goals.push([
        `4. \`vmplace ${row.cmd}\`: peak RSS`,
        `${mmm(rss)} MB`,
        rss.n,
        '≤ 300 MB',
        f2(rss.median / 300),
        verdict(rss.median <= 300),
      ]);
    }
  }
  const re = R.reaction;
  if (re) {
    const st = stats(re.results.map((x) => x.reactionMs));
    goals.push([
      '5. reaction: webhook POST → daemon logs "migrations started"',
      `${mmm(st)} ms`,
      st.n,
      '≤ 2000 ms',
      f2(st.median / 2000),
      verdict(st.median <= 2000),
    ]);
  }
  const takeovers = ['takeover-cross', 'takeover-single'].map((k) => R[k]).filter((x) => x?.results?.length);
  for (const tk of takeovers) {
    const st = stats(tk.results.map((x) => x.takeoverMs));
    const ttlMs = tk.opts.ttlMs;
    goals.push([
      `6. takeover after kill -9 of the owner (lease TTL ${ttlMs / 1000} s, ${tk.opts.topology}): kill → survivor's "taking over migration"`,
      `${mmm(st)} ms = ${f2(st.median / ttlMs)} × TTL`,
      st.n,
      `≤ TTL + 1 s (${ttlMs + 1000} ms)`,
      f2(st.median / (ttlMs + 1000)),
      verdict(st.n ? st.max <= ttlMs + 1000 : undefined),
    ]);
  }
  L.push('## Goals');
  L.push('');
  L.push(
    'Medians with (min–max); ratio = measured / goal for times and sizes (≤ 1 is good), baseline / vmplace for throughput (≥ 0.9 is good).',
  );
  L.push('');
  L.push('| goal | measured | N | goal | ratio | verdict |');
  L.push('|---|---|---|---|---|---|');
  for (const g of goals) L.push(`| ${g.join(' | ')} |`);
  L.push('');

  // ---------------------------------------------------------------- pause detail
  if (p) {
    L.push('## Pause');
    L.push('');
    L.push('![pause against disk size](pause.svg)');
    L.push('');
    L.push(
      `VM: the lab guest (TCG), 256 MiB RAM, one qcow2 disk half full, moved hv1 → hv2 → hv1 … with \`vmplace apply\` (the real CLI), on two topologies: **nothing shared** (no Cluster manifest: each host only its local storage, the memory state saved on the source and copied to the target inside the pause) and **cluster** (both hosts in cluster c1 with the shared storage csv, where the state file is saved and read). Runs rotate over topologies, modes and baselines. Write load: ${p.opts.inject ? '1 MiB writes from the host into the running disk through QEMU (HMP `qemu-io -d …virtio-backend`), 10 per second to fresh offsets, stopped while the persisted step is Saving/CopyingDelta/Restoring and restarted on the target once it runs there' : "only the guest's own writer"}; the guest itself writes ~10 acknowledged 4 KiB records/s${p.opts.guestBulk ? ` and, with its bulk writer, ${p.opts.guestBulk} MiB/s of 1 MiB O_DIRECT writes` : ''}. Pause = QEMU STOP event on the source → RESUME on the target (\`virsh qemu-monitor-event --timestamp\` on both hosts); libvirt lifecycle Suspended → Resumed and vmplace's \`migration.pauseMs\` beside it. Step times come from the persisted state (polled every 10 ms). Delta ≈ injected rate × (Snapshotting/2 + CopyingBase) when single round. Baselines on the same VM in the same run: the **floor** (\`virsh save\` + \`virsh restore\` in one shell on the host the VM runs on, state on its local storage) and the **seed's steps by hand** across hosts with nothing shared (\`snapshot-create-as --disk-only\`, rsync of the base while the VM runs under the same load, \`virsh save\`, scp of overlay + state with \`save-image-dumpxml\` beside it, then on the target XML written + \`qemu-img rebase -u\` + \`virsh restore --xml\` in one shell).`,
    );
    L.push('');
    if (p.failures?.length) {
      L.push(
        `**Failed runs: ${p.failures.length}** (counted, not in the medians; the bench went on from the host the VM ran on):`,
      );
      L.push('');
      for (const f of p.failures)
        L.push(
          `- ${f.topology} ${f.mode} ${size(f.sizeBytes)} run ${f.run} (${f.from} → ${f.to}, load ${f.load}; VM then on ${(f.vmOn ?? []).join(', ') || 'no host'}): ${String(f.error).slice(0, 400).replace(/\|/g, '/')}`,
        );
      L.push('');
    }
    L.push(
      '| topology | strategy | disk | N | pause, QEMU events (ms) | lifecycle events (ms) | status pauseMs (ms) | status − events (ms, max abs) | rounds | Saving (ms) | CopyingDelta (ms) | Restoring (ms) | state file (MB) | delta before the pause, est. (MB) | injected (MB/s) | whole migration (s) |',
    );
    L.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const t of [...topologies, 'one-host']) {
      for (const mode of Object.keys(MODE_LABEL)) {
        for (const s of sizes) {
          const all = (p.results ?? []).filter(
            (x) => x.mode === mode && x.sizeBytes === s && topologyOf(x) === t,
          );
          if (!all.length) continue;
          const rows = pauseRows(p, mode, s, t);
          if (!rows.length) {
            L.push(
              `| ${t} | ${MODE_LABEL[mode]} | ${size(s)} | 0 | ${all[0].note ?? 'n/a'} | | | | | | | | | | | |`,
            );
            continue;
          }
          const S = (k, f = (x) => x[k]) => stats(rows.map(f));
          if (mode.startsWith('base:')) {
            L.push(
              `| ${t} | ${MODE_LABEL[mode]} | ${size(s)} | ${rows.length} | ${mmm(S('pauseQemuMs'))} | ${mmm(S('pauseLifecycleMs'))} | – | – | – | – | – | – | ${mmm(S('', (x) => (x.stateBytes ?? NaN) / 1e6))} | ${mode === 'base:seed' ? mmm(S('', (x) => (x.overlayBytes ?? NaN) / 1e6)) + ' (overlay)' : '–'} | – | – |`,
            );
            continue;
          }
          const agree = Math.max(
            ...rows.map((x) => Math.abs((x.pauseMs ?? NaN) - (x.pauseQemuMs ?? NaN))).filter(Number.isFinite),
          );
          const delta = (x) =>
            (x.injectedMBps * ((x.stepMs.Snapshotting ?? 0) / 2 + (x.stepMs.CopyingBase ?? 0))) / 1000;
          L.push(
            `| ${t} | ${MODE_LABEL[mode]} | ${size(s)} | ${rows.length} | ${mmm(S('pauseQemuMs'))} | ${mmm(S('pauseLifecycleMs'))} | ${mmm(S('pauseMs'))} | ${f0(agree)} | ${mmm(S('rounds'))} | ` +
              `${mmm(S('', (x) => x.stepMs.Saving))} | ${mmm(S('', (x) => x.stepMs.CopyingDelta))} | ${mmm(S('', (x) => x.stepMs.Restoring))} | ` +
              `${mode.startsWith('quick') ? mmm(S('', (x) => (x.stateBytes ?? NaN) / 1e6)) : '–'} | ${mode.startsWith('quick') ? mmm(S('', delta)) : '–'} | ${mode === 'live:cross' ? 'none (guest only)' : mmm(S('injectedMBps'), (v) => v.toFixed(1))} | ${mmm(
                S('', (x) => x.migrationMs / 1000),
                (v) => v.toFixed(1),
              )} |`,
          );
        }
      }
    }
    L.push('');
    // where the pause goes, per topology
    const withParts = (p.results ?? []).some((x) => x.parts?.complete);
    if (withParts) {
      L.push('### Where the pause goes');
      L.push('');
      L.push(
        'Medians (min–max) per part, ms, each clipped to the pause (QEMU STOP → RESUME). vmplace\'s parts come from its debug log (`VMPLACE_LOG_LEVEL=debug`: the "pause part: …" lines of src/machine/steps/pause.ts and the steps\' start/done lines, pino timestamps on the same clock as the events): **save** = `virsh save` until it returned; **wait after save** = the rest of the step Saving, which waits for the delta copy begun during the save (*delta during save*); **state transfer** = the state file copied to the target (nothing shared only) and **delta** = the last overlay compared with its early copy (or copied) and relinked, both inside **CopyingDelta** and side by side; **restore** = `virsh restore`; **checks** = pause − save − wait after save − CopyingDelta − restore (step transitions and their persisted snapshots, restore lookups, the last look at the source, the write-ahead intents). *Delta during save* is the overlay copied while the memory is written (it starts once the source stops). With the memory moved by QEMU\'s migration of the paused VM (`[memory: paused]`, `policy.quickMemory: paused`): save = `virsh suspend`, state transfer = the migration (in Restoring, after CopyingDelta, so it counts apart from it), restore = `virsh resume`, restore lookups = the arrival lookups. The live way has no parts (its pause is the switch-over) and no row here. Floor: save = STOP → lifecycle "Stopped Saved", restore = the rest. Seed by hand: save = `virsh save` over ssh, state transfer = scp of overlay + state, CopyingDelta column = save end → scp and `save-image-dumpxml` both done, restore = XML + rebase + `virsh restore --xml`, checks = the rest.',
      );
      L.push('');
      for (const t of topologies) {
        L.push(`**${TOPOLOGY_LABEL[t]}**`);
        L.push('');
        L.push(
          '| strategy | disk | N | pause | save | wait after save | state transfer | delta | CopyingDelta | restore | checks inside the pause | delta during save | restore lookups |',
        );
        L.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
        const modes = [
          'quick:single',
          'quick:iterative',
          ...(t === 'nothing-shared' ? ['base:seed'] : []),
          'base:floor',
        ];
        for (const mode of modes)
          for (const s of sizes) {
            const rows = pauseRows(p, mode, s, mode === 'base:floor' ? 'one-host' : t).filter(
              (x) => x.parts?.complete,
            );
            if (!rows.length) continue;
            // one row per way the memory crossed (policy.quickMemory), as vmplace's log says
            for (const way of [...new Set(rows.map((x) => x.parts.way))]) {
              const these = rows.filter((x) => x.parts.way === way);
              const P = (k) => mmm(stats(these.map((x) => x.parts[k])));
              L.push(
                `| ${MODE_LABEL[mode]}${way ? ` [memory: ${way}]` : ''} | ${size(s)} | ${these.length} | ${P('pause')} | ${P('save')} | ${P('afterSave')} | ${P('stateTransfer')} | ${P('delta')} | ${P('copyingDelta')} | ${P('restore')} | ${P('checks')} | ${P('earlyDelta')} | ${P('restoreLookups')} |`,
              );
            }
          }
        L.push('');
      }
    }
    const lv = (p.results ?? []).filter((x) => x.mode === 'live:same');
    if (lv.length)
      L.push(
        `Live, same host: the longest single injected 1 MiB write during the move (a stall of the disk, e.g. at the pivot) was ${mmm(stats(lv.map((x) => x.maxWriteLatencyMs)))} ms (median of the per-run maxima); the guest was never stopped (no STOP/Suspended event).`,
      );
    const iter = (p.results ?? []).filter((x) => x.mode === 'quick:iterative' && x.deltaRounds?.length);
    if (iter.length) {
      L.push('');
      L.push(
        'Delta rounds logged by vmplace in iterative runs (round: delta MB, predicted ms vs budget ms):',
      );
      L.push('');
      for (const x of iter)
        L.push(
          `- ${topologyOf(x)}, ${size(x.sizeBytes)} run ${x.run}: ${x.deltaRounds.map((d) => `r${d.round} ${(d.deltaBytes / 1e6).toFixed(1)} MB ${d.predictedMs ?? '–'}/${d.budgetMs}`).join(' → ')}; pause ${f0(x.pauseQemuMs)} ms`,
        );
    }
    L.push('');
    L.push('<details><summary>every run</summary>');
    L.push('');
    L.push(
      '| topology | strategy | disk | run | from → to | QEMU events | lifecycle | pauseMs | rounds | steps (ms) | parts (ms) | load |',
    );
    L.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
    const partsOf = (x) =>
      x.parts
        ? ['save', 'afterSave', 'stateTransfer', 'delta', 'copyingDelta', 'restore', 'checks']
            .filter((k) => typeof x.parts[k] === 'number')
            .map((k) => `${k} ${f0(x.parts[k])}`)
            .join(', ')
        : '';
    for (const x of p.results ?? [])
      L.push(
        `| ${topologyOf(x)} | ${x.mode} | ${size(x.sizeBytes)} | ${x.run} | ${x.from} → ${x.to} | ${f0(x.pauseQemuMs)} | ${f0(x.pauseLifecycleMs)} | ${f0(x.pauseMs)} | ${x.rounds ?? '–'} | ${Object.entries(
          x.stepMs ?? {},
        )
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')} | ${partsOf(x)} | ${x.load} |`,
      );
    L.push('');
    L.push('</details>');
    L.push('');
  }

  // ---------------------------------------------------------------- copy detail
  if (c) {
    L.push('## Copy');
    L.push('');
    L.push(
      `Same host: a ${size(c.opts.sizeBytes)} raw file, half of it allocated in 64 MiB runs of random data, on the lab's ext4, page cache warm (never dropped: shared machine); methods run in rotating order. Cross host: the same kind of file from hv1 to hv2 over the lab's veth link; "interface" counts hv1's transmitted bytes (ssh included). MB/s = file size / time.`,
    );
    L.push('');
    L.push("| where | method | N | time (ms) | MB/s (median) | bytes reported | bytes on hv1's interface |");
    L.push('|---|---|---|---|---|---|---|');
    const groups = new Map();
    for (const x of c.results) {
      const k = `${x.kind}|${x.method}`;
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(x);
    }
    for (const [k, rows] of groups) {
      const [kind, method] = k.split('|');
      const t = stats(rows.map((x) => x.ms));
      const rep = stats(rows.map((x) => x.reportedBytes));
      const tx = stats(rows.map((x) => x.txBytes));
      L.push(
        `| ${kind} (${size(rows[0].bytes)}${rows[0].dataBytes ? `, ${size(rows[0].dataBytes)} data` : ''}) | ${method} | ${rows.length} | ${mmm(t)} | ${f0(rows[0].bytes / 1e6 / (t.median / 1000))} | ${rep.n ? size(rep.median) : '–'} | ${tx.n ? size(tx.median) : '–'} |`,
      );
    }
    const sha = cs('same-host', 'sha256 of both (parallel)');
    const hv = cs('same-host', 'copyLocal hash:true (sha256)');
    if (sha.n)
      L.push(
        `\nsha256 of source and copy, both read through read(), in parallel (copyLocal with hash: true reads its fresh copy without the holes, see NOTES): ${mmm(sha)} ms = ${f0((100 * sha.median) / hv.median)} % of that copy's median.`,
      );
    L.push('');
  }

  if (pl) {
    L.push('## Plan');
    L.push('');
    L.push(
      `\`bench/gen-fleet.js\`: ${pl.opts.vms} VMs, ${pl.opts.hosts} hosts, ${pl.opts.clusters} clusters; each command in a fresh Node process (start-up included), peak RSS from the child itself.`,
    );
    L.push('');
    L.push('| command | N | wall (ms) | in-process (ms) | peak RSS (MB) |');
    L.push('|---|---|---|---|---|');
    for (const row of pl.rows)
      L.push(
        `| vmplace ${row.cmd} | ${row.wall.length} | ${mmm(stats(row.wall))} | ${mmm(stats(row.inProcessMs ?? []))} | ${mmm(stats(row.rss))} |`,
      );
    L.push('');
  }
  if (re) {
    L.push('## Reaction');
    L.push('');
    L.push(
      'The real `vmplace daemon` (`--interval 1h`, so only the webhook wakes it) on a local bare repository; a clone pushes a change of the VM\'s storage, then `POST /hooks/git`; time = the daemon\'s "migrations started" log line − the moment the POST was sent. Each run waits for the move and its status commit before the next.',
    );
    L.push('');
    L.push('| N | reaction (ms) | webhook answered (ms) |');
    L.push('|---|---|---|');
    L.push(
      `| ${re.results.length} | ${mmm(stats(re.results.map((x) => x.reactionMs)))} | ${mmm(stats(re.results.map((x) => x.webhookAnswerMs)))} |`,
    );
    L.push('');
  }
  if (takeovers.length) {
    const tk = takeovers[0];
    L.push('## Takeover');
    L.push('');
    L.push(
      `Three real \`vmplace daemon\` replicas (\`--etcd-endpoints\` of a 3-member etcd on loopback, \`--lease-ttl ${tk.opts.ttl}\`, \`--interval 1s\`) follow one bare repository; a clone pushes a quick move of the lab guest (${tk.opts.dataMiB} MiB of data in the base, \`limits.bandwidth: ${tk.opts.bandwidth}\` so the base copy is in flight); 300 ms after the owning replica logs CopyingBase it gets SIGKILL. Takeover = the survivor's "taking over migration" log line − the kill; next step = its first persisted step of that migration after the takeover (the base copy runs again first). Each run waits for Completed, then restarts the killed replica under its name. Ratio = takeover / TTL.`,
    );
    L.push('');
    L.push('| topology | N | takeover (ms) | takeover / TTL | next step (ms) | finished | taken in step |');
    L.push('|---|---|---|---|---|---|---|');
    for (const t of takeovers) {
      const st = stats(t.results.map((x) => x.takeoverMs));
      L.push(
        `| ${t.opts.topology} | ${t.results.length} | ${mmm(st)} | ${mmm(stats(t.results.map((x) => x.takeoverMs / t.opts.ttlMs)), f2)} | ${mmm(stats(t.results.map((x) => x.nextStepMs)))} | ${[...new Set(t.results.map((x) => x.finalStep))].join(', ')} | ${[...new Set(t.results.map((x) => x.takenInStep))].join(', ')} |`,
      );
    }
    L.push('');
  }
  const notes = path.join(out, 'NOTES.md');
  if (fs.existsSync(notes)) L.push(fs.readFileSync(notes, 'utf8'));
  fs.writeFileSync(path.join(out, 'RESULTS.md'), L.join('\n') + '\n');
  fs.writeFileSync(path.join(out, 'pause.svg'), svg(p) + '\n');
}

module.exports = { writeReport };

if (require.main === module) writeReport(path.resolve(process.argv[2] ?? __dirname));
