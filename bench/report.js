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
};

/** rows of one mode and size that really ran that mode */
function pauseRows(p, mode, sz) {
  return (p?.results ?? []).filter(
    (x) =>
      x.mode === mode && x.sizeBytes === sz && !(mode === 'live:cross' && x.effectiveStrategy !== 'live'),
  );
}

function pauseSummary(p) {
  const sizes = [...new Set((p?.results ?? []).map((x) => x.sizeBytes))].sort((a, b) => a - b);
  const modes = Object.keys(MODE_LABEL).filter((m) => (p?.results ?? []).some((x) => x.mode === m));
  return { sizes, modes };
}

function svg(p) {
  const { sizes } = pauseSummary(p);
  const W = 860,
    H = 500,
    L = 80,
    R = 300,
    T = 50,
    B = 60;
  const series = [
    ['quick:single', '#d62728', 'circle'],
    ['quick:iterative', '#1f77b4', 'square'],
    ['live:same', '#2ca02c', 'diamond'],
    ['live:cross', '#9467bd', 'triangle'],
  ];
  let ymax = 1200;
  for (const [m] of series)
    for (const s of sizes) for (const x of pauseRows(p, m, s)) ymax = Math.max(ymax, x.pauseQemuMs ?? 0);
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
  const mark = (shape, x, y, c) => {
    if (shape === 'circle') return `<circle cx="${x}" cy="${y}" r="5" fill="${c}"/>`;
    if (shape === 'square') return `<rect x="${x - 5}" y="${y - 5}" width="10" height="10" fill="${c}"/>`;
    if (shape === 'diamond')
      return `<path d="M${x} ${y - 6} L${x + 6} ${y} L${x} ${y + 6} L${x - 6} ${y} Z" fill="${c}"/>`;
    return `<path d="M${x} ${y - 6} L${x + 6} ${y + 5} L${x - 6} ${y + 5} Z" fill="${c}"/>`;
  };
  series.forEach(([m, c, shape], k) => {
    const pts = [];
    sizes.forEach((s, i) => {
      const st = stats(pauseRows(p, m, s).map((x) => x.pauseQemuMs));
      if (!st.n) return;
      const x = xs(i) + (k - 1.5) * 14;
      pts.push([x, ys(st.median)]);
      o.push(
        `<line x1="${x}" y1="${ys(st.min)}" x2="${x}" y2="${ys(st.max)}" stroke="${c}" stroke-width="1.5"/>`,
      );
      o.push(`<line x1="${x - 4}" y1="${ys(st.min)}" x2="${x + 4}" y2="${ys(st.min)}" stroke="${c}"/>`);
      o.push(`<line x1="${x - 4}" y1="${ys(st.max)}" x2="${x + 4}" y2="${ys(st.max)}" stroke="${c}"/>`);
      o.push(mark(shape, x, ys(st.median), c));
      o.push(
        `<text x="${x + 8}" y="${ys(st.median) + 4}" fill="${c}" font-size="10">${f0(st.median)}</text>`,
      );
    });
    if (pts.length > 1)
      o.push(
        `<polyline points="${pts.map((q) => q.join(',')).join(' ')}" fill="none" stroke="${c}" stroke-opacity="0.5"/>`,
      );
  });
  // legend
  const lx = L + pw + 20;
  o.push(`<text x="${lx}" y="${T + 4}" font-weight="bold">strategy</text>`);
  series.forEach(([m, c, shape], k) => {
    const y = T + 26 + k * 24;
    const ran = sizes.some((s) => pauseRows(p, m, s).length);
    o.push(mark(shape, lx + 6, y - 4, ran ? c : '#bbb'));
    o.push(
      `<text x="${lx + 18}" y="${y}" fill="${ran ? 'black' : '#999'}">${MODE_LABEL[m]}${ran ? '' : ' (not run / n/a)'}</text>`,
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
  const { sizes } = pauseSummary(p);
  const pauseStat = (mode, s) => stats(pauseRows(p, mode, s).map((x) => x.pauseQemuMs));
  for (const mode of ['quick:single', 'quick:iterative']) {
    for (const s of sizes) {
      const st = pauseStat(mode, s);
      goals.push([
        `1. pause, ${MODE_LABEL[mode]}, cross host, ${size(s)} disk`,
        `${mmm(st)} ms`,
        st.n,
        '≤ 1000 ms',
        st.n ? f2(st.median / 1000) : '–',
        verdict(st.n ? st.median <= 1000 : undefined),
      ]);
    }
    if (sizes.length >= 2) {
      const a = pauseStat(mode, sizes[0]);
      const b = pauseStat(mode, sizes[sizes.length - 1]);
      const ratio = a.n && b.n ? b.median / a.median : undefined;
      goals.push([
        `1. pause ratio ${size(sizes[sizes.length - 1])} / ${size(sizes[0])}, ${MODE_LABEL[mode]}`,
        f2(ratio),
        Math.min(a.n, b.n),
        '≤ 1.2',
        f2(ratio),
        verdict(ratio === undefined ? undefined : ratio <= 1.2),
      ]);
    }
  }
  for (const mode of ['live:same', 'live:cross']) {
    for (const s of sizes) {
      const st = pauseStat(mode, s);
      const fell = (p?.results ?? []).find((x) => x.mode === mode && x.sizeBytes === s && x.note);
      goals.push([
        `2. pause, ${MODE_LABEL[mode]}, ${size(s)} disk`,
        st.n ? `${mmm(st)} ms` : fell ? `n/a: ${fell.note}` : 'not run',
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
      `VM: the lab guest (TCG), 256 MiB RAM, one qcow2 disk half full, moved hv1 → hv2 → hv1 … with \`vmplace apply\` (the real CLI). Write load: ${p.opts.inject ? '1 MiB writes from the host into the running disk through QEMU (HMP `qemu-io -d …virtio-backend`), 10 per second to fresh offsets, stopped while the persisted step is Saving/CopyingDelta/Restoring and restarted on the target once it runs there' : "only the guest's own writer"}; the guest itself writes ~10 acknowledged 4 KiB records/s${p.opts.guestBulk ? ` and, with its bulk writer, ${p.opts.guestBulk} MiB/s of 1 MiB O_DIRECT writes` : ''}. Pause = QEMU STOP event on the source → RESUME on the target (\`virsh qemu-monitor-event --timestamp\` on both hosts); libvirt lifecycle Suspended → Resumed and vmplace's \`migration.pauseMs\` beside it. Step times come from the persisted state (polled every 10 ms). Delta ≈ injected rate × (Snapshotting/2 + CopyingBase) when single round.`,
    );
    L.push('');
    L.push(
      '| strategy | disk | N | pause, QEMU events (ms) | lifecycle events (ms) | status pauseMs (ms) | status − events (ms, max abs) | rounds | Saving (ms) | CopyingDelta (ms) | Restoring (ms) | state file (MB) | delta before the pause, est. (MB) | injected (MB/s) | whole migration (s) |',
    );
    L.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const mode of Object.keys(MODE_LABEL)) {
      for (const s of sizes) {
        const all = (p.results ?? []).filter((x) => x.mode === mode && x.sizeBytes === s);
        if (!all.length) continue;
        const rows = pauseRows(p, mode, s);
        if (!rows.length) {
          L.push(`| ${MODE_LABEL[mode]} | ${size(s)} | 0 | ${all[0].note ?? 'n/a'} | | | | | | | | | | | |`);
          continue;
        }
        const S = (k, f = (x) => x[k]) => stats(rows.map(f));
        const agree = Math.max(
          ...rows.map((x) => Math.abs((x.pauseMs ?? NaN) - (x.pauseQemuMs ?? NaN))).filter(Number.isFinite),
        );
        const delta = (x) =>
          (x.injectedMBps * ((x.stepMs.Snapshotting ?? 0) / 2 + (x.stepMs.CopyingBase ?? 0))) / 1000;
        L.push(
          `| ${MODE_LABEL[mode]} | ${size(s)} | ${rows.length} | ${mmm(S('pauseQemuMs'))} | ${mmm(S('pauseLifecycleMs'))} | ${mmm(S('pauseMs'))} | ${f0(agree)} | ${mmm(S('rounds'))} | ` +
            `${mmm(S('', (x) => x.stepMs.Saving))} | ${mmm(S('', (x) => x.stepMs.CopyingDelta))} | ${mmm(S('', (x) => x.stepMs.Restoring))} | ` +
            `${mode.startsWith('quick') ? mmm(S('', (x) => (x.stateBytes ?? NaN) / 1e6)) : '–'} | ${mode.startsWith('quick') ? mmm(S('', delta)) : '–'} | ${mode === 'live:cross' ? 'none (guest only)' : mmm(S('injectedMBps'), (v) => v.toFixed(1))} | ${mmm(
              S('', (x) => x.migrationMs / 1000),
              (v) => v.toFixed(1),
            )} |`,
        );
      }
    }
    L.push('');
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
          `- ${size(x.sizeBytes)} run ${x.run}: ${x.deltaRounds.map((d) => `r${d.round} ${(d.deltaBytes / 1e6).toFixed(1)} MB ${d.predictedMs ?? '–'}/${d.budgetMs}`).join(' → ')}; pause ${f0(x.pauseQemuMs)} ms`,
        );
    }
    L.push('');
    L.push('<details><summary>every run</summary>');
    L.push('');
    L.push(
      '| strategy | disk | run | from → to | QEMU events | lifecycle | pauseMs | rounds | steps (ms) | load |',
    );
    L.push('|---|---|---|---|---|---|---|---|---|---|');
    for (const x of p.results ?? [])
      L.push(
        `| ${x.mode} | ${size(x.sizeBytes)} | ${x.run} | ${x.from} → ${x.to} | ${f0(x.pauseQemuMs)} | ${f0(x.pauseLifecycleMs)} | ${f0(x.pauseMs)} | ${x.rounds} | ${Object.entries(
          x.stepMs,
        )
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')} | ${x.load} |`,
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
        `\nsha256 of source and copy (in parallel, as copyLocal with hash: true does): ${mmm(sha)} ms = ${f0((100 * sha.median) / hv.median)} % of that copy's median.`,
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
