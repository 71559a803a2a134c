/**
 * Copy throughput and bytes on the wire.
 *
 * Same host (the management box's own filesystem, as the local transport on the local
 * lab): one file of `sizeBytes` with half of it allocated in 64 MiB runs of random data, page
 * cache warm (the file was just written; caches are never dropped: this machine is shared).
 * Per run, in rotating order: `cp --sparse=always`, `cp --sparse=always` + `sync` (the baseline:
 * every vmplace copy is flushed before it gets its name), vmplace's `copyLocal(exec, src, dst,
 * {verify: false})`, the local transport (verified: byte comparison with `qemu-img compare`), and
 * `copyLocal` with `hash: true` (verified by sha256 of both files: the source read through read(),
 * the fresh copy without its holes); plus the two sha256s alone, in parallel, both through read().
 *
 * Across hosts (two-host lab, hv1 -> hv2): plain `rsync --sparse` run on hv1 over the same ssh
 * link (same key, known_hosts; ssh's default ciphers, and AES-GCM first as vmplace's copies ask)
 * against vmplace's `copyBetweenHosts` without and with sha256 verification. Then a sparse file (`sparseBytes` apparent, `sparseAllocBytes` allocated, raw)
 * and a qcow2 image of the same virtual size and data: bytes on the wire counted three ways:
 * rsync's `--stats` ("Total bytes sent"), vmplace's `bytesSent` (rsync's literal data), and the
 * tx_bytes of hv1's interface (every byte, ssh included; other traffic on the lab adds to it).
 */
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { MiB, run, nowMs, log, loadavg } = require('./lib/util');
const lab = require('./lib/lab');

/** `fill` a sparse file: allocated runs of 64 MiB random data spread over the file */
function fillScript(file, size, alloc) {
  const runs = Math.max(1, Math.round(alloc / (64 * MiB)));
  const runBytes = Math.min(64 * MiB, alloc);
  const stride = Math.floor(size / runs / MiB);
  const blocks = runBytes / MiB;
  let s = `set -e; rm -f '${file}'; truncate -s ${size} '${file}'; `;
  for (let i = 0; i < runs; i++)
    s += `head -c ${runBytes} /dev/urandom | dd of='${file}' bs=1M seek=${i * stride} count=${blocks} conv=notrunc iflag=fullblock status=none; `;
  return s + `sync '${file}'`;
}

async function timeIt(fn) {
  const t0 = nowMs();
  const r = await fn();
  return { ms: nowMs() - t0, r };
}

async function sameHost({ runs, sizeBytes, results }) {
  const { copyLocal, sha256 } = lab.dist('transfer/copy-local');
  const { LocalExec } = lab.dist('exec/exec');
  const { LibvirtDriver } = lab.dist('drivers/libvirt/driver');
  const { localTransport } = lab.dist('transfer/transport');
  // on the lab's filesystem (not a tmpfs): where VM images live
  const dir = fs.mkdtempSync(
    path.join(fs.existsSync('/var/tmp') ? '/var/tmp' : os.tmpdir(), 'vmplace-bench-copy-'),
  );
  const exec = new LocalExec();
  const drv = new LibvirtDriver('lab', { driver: 'libvirt', uri: 'qemu:///system' }, { allowedRoots: [dir] });
  try {
    const src = path.join(dir, 'src.raw');
    await run('sh', ['-c', fillScript(src, sizeBytes, sizeBytes / 2)]);
    const dst = path.join(dir, 'dst.raw');
    const clean = async () => {
      fs.rmSync(dst, { force: true });
      fs.rmSync(`${dst}.vmplace-part`, { force: true });
      await run('sync', []);
    };
    const methods = {
      'cp --sparse=always': () => run('cp', ['--sparse=always', '--', src, dst]),
      'cp --sparse=always + sync': async () => {
        await run('cp', ['--sparse=always', '--', src, dst]);
        await run('sync', ['--', dst]);
      },
      'copyLocal verify:false': () => copyLocal(exec, src, dst, { verify: false }),
      'local transport (verified)': () => localTransport(drv.exec, (p) => drv.guardPath(p)).copy(src, dst),
      'copyLocal hash:true (sha256)': () => copyLocal(exec, src, dst, { hash: true }),
      'sha256 of both (parallel)': async () => {
        await run('cp', ['--sparse=always', '--', src, dst]); // not timed below
        return 'sha';
      },
    };
    const names = Object.keys(methods);
    for (let i = 0; i < runs; i++) {
      const load = loadavg();
      for (let k = 0; k < names.length; k++) {
        const name = names[(i + k) % names.length];
        await clean();
        let ms;
        if (name.startsWith('sha256')) {
          await methods[name]();
          await run('sync', []);
          ms = (await timeIt(() => Promise.all([sha256(exec, src), sha256(exec, dst)]))).ms;
        } else ms = (await timeIt(methods[name])).ms;
        results.push({ kind: 'same-host', method: name, run: i + 1, bytes: sizeBytes, ms, load });
      }
      log(
        `copy: same host run ${i + 1}: ${results
          .slice(-names.length)
          .map((x) => `${x.method} ${x.ms.toFixed(0)} ms`)
          .join(', ')}`,
      );
    }
  } finally {
    await drv.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function rsyncStats(text) {
  const n = (re) => {
    const m = re.exec(text);
    return m ? Number(m[1].replace(/,/g, '')) : undefined;
  };
  return { totalSent: n(/Total bytes sent: ([\d,]+)/), literal: n(/Literal data: ([\d,]+)/) };
}

async function crossHost({ runs, sizeBytes, sparseBytes, sparseAllocBytes, sparseRuns, results }) {
  const { copyBetweenHosts, hopSshOptions } = lab.dist('transfer/between-hosts');
  const { SshExec, quoteShellArgs } = lab.dist('exec/exec');
  const env = await lab.ensureHosts();
  const h1 = env.hosts.hv1;
  const h2 = env.hosts.hv2;
  const e1 = new SshExec(h1.ssh);
  const e2 = new SshExec(h2.ssh);
  const hop = lab.transferSsh(h1, h2);
  const tag = `vmpb-copy-${process.pid}`;
  const src = path.posix.join(h1.storage, `${tag}.raw`);
  const dst = path.posix.join(h2.storage, `${tag}.raw`);
  const txBytes = async () =>
    Number(
      (await run('ip', ['netns', 'exec', h1.ns, 'cat', `/sys/class/net/${h1.link}/statistics/tx_bytes`]))
        .stdout,
    );
  const clean = async (file) => {
    await e2.run(['rm', '-f', '--', file, `${file}.vmplace-part`]);
    await e2.run(['sync']);
  };
  // vmplace's copies prefer AES-GCM (COPY_CIPHERS); plain rsync is measured with ssh's defaults
  // (the goal's baseline) and with that preference too, to show what the cipher alone is worth
  const aesFirst =
    lab.dist('transfer/rsync-direct').COPY_CIPHERS ??
    'aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr';
  const plainRsync = (from, to, sshExtra = []) =>
    e1.run([
      'rsync',
      '--sparse',
      '--stats',
      '-e',
      quoteShellArgs(['ssh', ...hopSshOptions(hop), ...sshExtra]),
      '--',
      from,
      `${h2.addr}:${to}`,
    ]);
  try {
    await e1.run(['sh', '-c', fillScript(src, sizeBytes, sizeBytes / 2)], { timeoutMs: 600_000 });
    const methods = {
      'rsync --sparse over ssh': async () => rsyncStats((await plainRsync(src, dst)).stdout).totalSent,
      'rsync --sparse over ssh, AES-GCM first': async () =>
        rsyncStats((await plainRsync(src, dst, ['-o', `Ciphers=${aesFirst}`])).stdout).totalSent,
      'copyBetweenHosts verify:false': async () =>
        (await copyBetweenHosts(e1, e2, src, dst, { targetSsh: hop, verify: false })).bytesSent,
      'copyBetweenHosts (sha256)': async () =>
        (await copyBetweenHosts(e1, e2, src, dst, { targetSsh: hop })).bytesSent,
    };
    const names = Object.keys(methods);
    for (let i = 0; i < runs; i++) {
      const load = loadavg();
      for (let k = 0; k < names.length; k++) {
        const name = names[(i + k) % names.length];
        await clean(dst);
        const tx0 = await txBytes();
        const { ms, r } = await timeIt(methods[name]);
        const tx = (await txBytes()) - tx0;
        results.push({
          kind: 'cross-host',
          method: name,
          run: i + 1,
          bytes: sizeBytes,
          ms,
          reportedBytes: r,
          txBytes: tx,
          load,
        });
      }
      log(
        `copy: cross host run ${i + 1}: ${results
          .slice(-names.length)
          .map((x) => `${x.method} ${x.ms.toFixed(0)} ms`)
          .join(', ')}`,
      );
    }
    await clean(dst);
    await e1.run(['rm', '-f', '--', src]);

    // fixed cost per copy, as paid for every file copied during a pause (overlay, state file)
    const small = path.posix.join(h1.storage, `${tag}-small.raw`);
    const smallDst = path.posix.join(h2.storage, `${tag}-small.raw`);
    await e1.run(['sh', '-c', `head -c ${MiB} /dev/urandom > '${small}'`]);
    const smallMethods = {
      'rsync --sparse over ssh': async () => rsyncStats((await plainRsync(small, smallDst)).stdout).totalSent,
      'copyBetweenHosts verify:false': async () =>
        (await copyBetweenHosts(e1, e2, small, smallDst, { targetSsh: hop, verify: false })).bytesSent,
      'copyBetweenHosts (sha256)': async () =>
        (await copyBetweenHosts(e1, e2, small, smallDst, { targetSsh: hop })).bytesSent,
    };
    for (let i = 0; i < runs; i++) {
      for (const name of Object.keys(smallMethods)) {
        await clean(smallDst);
        const { ms, r } = await timeIt(smallMethods[name]);
        results.push({
          kind: 'cross-host-1MiB',
          method: name,
          run: i + 1,
          bytes: MiB,
          ms,
          reportedBytes: r,
          load: loadavg(),
        });
      }
    }
    log(
      `copy: 1 MiB across hosts: ${results
        .slice(-3)
        .map((x) => `${x.method} ${x.ms.toFixed(0)} ms`)
        .join(', ')}`,
    );
    await clean(smallDst);
    await e1.run(['rm', '-f', '--', small]);

    // sparse: a raw file and a qcow2 image with the same data
    const sraw = path.posix.join(h1.storage, `${tag}-sparse.raw`);
    const sq = path.posix.join(h1.storage, `${tag}-sparse.qcow2`);
    await e1.run(['sh', '-c', fillScript(sraw, sparseBytes, sparseAllocBytes)], { timeoutMs: 600_000 });
    await e1.run(['qemu-img', 'convert', '-O', 'qcow2', sraw, sq], { timeoutMs: 600_000 });
    const du = async (f) => {
      const [a, b] = (await e1.run(['stat', '-c', '%s %b', '--', f])).stdout.trim().split(' ').map(Number);
      return { apparent: a, allocated: b * 512 };
    };
    for (const [fmtName, file] of [
      ['raw', sraw],
      ['qcow2', sq],
    ]) {
      const size = await du(file);
      const to = path.posix.join(h2.storage, path.posix.basename(file));
      for (let i = 0; i < sparseRuns; i++) {
        for (const name of ['rsync --sparse over ssh', 'copyBetweenHosts verify:false']) {
          await clean(to);
          const tx0 = await txBytes();
          const { ms, r } = await timeIt(async () =>
            name.startsWith('rsync')
              ? rsyncStats((await plainRsync(file, to)).stdout).totalSent
              : (await copyBetweenHosts(e1, e2, file, to, { targetSsh: hop, verify: false })).bytesSent,
          );
          const tx = (await txBytes()) - tx0;
          results.push({
            kind: `sparse-${fmtName}`,
            method: name,
            run: i + 1,
            bytes: size.apparent,
            allocatedBytes: size.allocated,
            dataBytes: sparseAllocBytes,
            ms,
            reportedBytes: r,
            txBytes: tx,
            load: loadavg(),
          });
          log(
            `copy: sparse ${fmtName} ${(size.apparent / MiB).toFixed(0)} MiB (${(size.allocated / MiB).toFixed(0)} MiB allocated) ${name}: ${ms.toFixed(0)} ms, reported ${(r / MiB).toFixed(1)} MiB, interface ${(tx / MiB).toFixed(1)} MiB`,
          );
        }
        await clean(to);
      }
    }
    await e1.run(['rm', '-f', '--', sraw, sq]);
  } finally {
    await e2.run(['sh', '-c', `rm -f ${h2.storage}/${tag}*`]).catch(() => undefined);
    await e1.run(['sh', '-c', `rm -f ${h1.storage}/${tag}*`]).catch(() => undefined);
    await Promise.all([e1.close(), e2.close()]);
  }
}

async function copyBench(opts) {
  const results = [];
  const loadBefore = loadavg();
  if (opts.sameHost !== false) await sameHost({ ...opts, results });
  if (opts.crossHost !== false) await crossHost({ ...opts, results });
  return { section: 'copy', date: new Date().toISOString(), opts, loadBefore, loadAfter: loadavg(), results };
}

module.exports = { copyBench };
