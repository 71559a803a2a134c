/**
 * Small helpers shared by the benchmarks: running commands (argument arrays, never a shell
 * string), statistics, machine facts and logging. Plain Node, no dependencies.
 */
'use strict';
const { execFile, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Run a command; resolves {code, stdout, stderr, ms}; rejects on a non-zero exit unless allowFail. */
function run(cmd, args, opts = {}) {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        maxBuffer: 256 * MiB,
        timeout: opts.timeoutMs ?? 600_000,
        env: { ...process.env, LC_ALL: 'C', ...(opts.env ?? {}) },
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        if (err && !opts.allowFail) {
          reject(
            new Error(`${cmd} ${args.join(' ')} failed (${err.code ?? err.signal}): ${stderr || stdout}`),
          );
        } else resolve({ code, stdout, stderr, ms });
      },
    );
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

function stats(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x));
  if (!v.length) return { n: 0 };
  const s = [...v].sort((a, b) => a - b);
  const m = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return { n: s.length, median: m, min: s[0], max: s[s.length - 1] };
}

function log(...a) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${a.join(' ')}\n`);
}

function loadavg() {
  return os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
}

function sh(cmd) {
  try {
    return execFileSync('sh', ['-c', cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

/** Facts about this machine for the report. */
function machineInfo() {
  let git = sh(`git -C ${JSON.stringify(ROOT)} rev-parse --short HEAD`);
  const dirty = sh(`git -C ${JSON.stringify(ROOT)} status --porcelain --untracked-files=no -- src`);
  if (dirty)
    git += ` + uncommitted changes in ${dirty
      .split('\n')
      .map((l) => l.slice(3))
      .join(', ')}`;
  return {
    date: new Date().toISOString(),
    nproc: os.cpus().length,
    cpu: os.cpus()[0]?.model ?? '?',
    memGiB: +(os.totalmem() / GiB).toFixed(1),
    kernel: os.release(),
    node: process.version,
    qemu: sh('qemu-system-x86_64 --version | head -n1'),
    libvirt: sh('libvirtd --version'),
    rsync: sh('rsync --version | head -n1'),
    openssh: sh('ssh -V 2>&1'),
    kvm: fs.existsSync('/dev/kvm')
      ? '/dev/kvm present, but the lab guests run under TCG (<domain type=qemu>): nested KVM hangs the guest kernel here (LAB.md)'
      : 'no /dev/kvm: TCG',
    git,
    loadavg: loadavg(),
  };
}

module.exports = { ROOT, MiB, GiB, run, sleep, nowMs, stats, log, loadavg, machineInfo, sh };
