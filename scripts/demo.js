#!/usr/bin/env node
// The demo: a real VM with two disks that keeps writing, moved by pull request from storage a
// to storage b on the local lab. Run through scripts/demo.sh (which installs and starts the lab).
//
//   node scripts/demo.js [--keep]
//
// Every command runs through execFile with an argument array; nothing goes through a shell.
// The guest comes from the lab library (src/lab, built to dist/lab by scripts/demo.sh).
'use strict';
const { execFile, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const lab = require(path.join(ROOT, 'dist', 'lab'));
const BIN = path.join(ROOT, 'bin', 'vmplace.js');
const VM = 'vmplace-demo';
const STORAGE = '/var/lib/vmplace-demo';
const keep = process.argv.includes('--keep');

function run(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 64 << 20, ...opts }, (err, stdout, stderr) => {
      if (err && !opts.allowFail) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`));
      else resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Run vmplace with the terminal attached, so progress bars and logs show. */
function vmplace(args) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: 'inherit' });
    child.on('exit', (code) => resolve(code ?? 1));
  });
}

const virsh = (...args) => run('virsh', ['-c', 'qemu:///system', ...args]);
const say = (s) => process.stdout.write(`\n\x1b[1m== ${s}\x1b[0m\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Disk -> highest record the guest acknowledged, from its serial console. */
const acks = async (serialLog) => Object.fromEntries(await lab.ackedSequences(serialLog));

async function cleanup(repo) {
  await virsh('destroy', VM).catch(() => undefined);
  await virsh('undefine', VM).catch(() => undefined);
  fs.rmSync(STORAGE, { recursive: true, force: true });
  if (repo) fs.rmSync(path.dirname(repo), { recursive: true, force: true });
}

async function main() {
  const t0 = Date.now();
  await cleanup();
  const guest = await lab.buildGuest();

  // The operator's GitOps repository: the project's demo manifests in a fresh git repo.
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-demo-'));
  const repo = path.join(work, 'fleet');
  fs.mkdirSync(repo);
  fs.cpSync(path.join(ROOT, 'manifests'), path.join(repo, 'manifests'), { recursive: true });
  const git = (...a) =>
    run('git', ['-C', repo, '-c', 'user.name=demo', '-c', 'user.email=demo@vmplace.invalid', ...a]);
  await git('init', '-q', '-b', 'main');
  await git('add', '-A');
  await git('commit', '-q', '-m', 'Demo fleet: vmplace-demo on storage a');

  say('A real VM (Debian kernel, busybox writer) with two qcow2 disks on storage a');
  for (const d of ['a', 'b']) fs.mkdirSync(path.join(STORAGE, d), { recursive: true });
  const serialLog = path.join(STORAGE, 'serial.log');
  const disks = ['vda', 'vdb'].map((t) => ({ target: t, path: path.join(STORAGE, 'a', `${VM}-${t}.qcow2`) }));
  for (const d of disks) {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', d.path, '256M']);
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 32M 96M', d.path]); // some data to copy
  }
  await lab.defineGuestVm({ name: VM, disks, serialLog, guest, memoryMiB: 128, rateHz: 20 });

  try {
    for (const d of disks)
      await lab.waitForAcks(serialLog, { disk: d.target, atLeast: 3, timeoutMs: 60_000 });
    console.log(`guest is writing: acknowledged records ${JSON.stringify(await acks(serialLog))}`);
    const stateDir = path.join(work, 'state');
    say('vmplace validate: the manifests are valid');
    await vmplace(['validate', repo]);
    say('vmplace apply: observe the host and write status/ (nothing to move yet)');
    await vmplace(['apply', repo, '--yes', '--state-dir', stateDir]);

    say('A pull request moves the VM to storage b');
    const file = path.join(repo, 'manifests', 'demo.yaml');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/storage: a\b/, 'storage: b'));
    await git('commit', '-q', '-am', 'Move vmplace-demo to storage b');
    console.log((await git('show', '--stat', '--format=%h %s', 'HEAD')).stdout);

    say('vmplace plan (what CI would comment on the pull request)');
    await vmplace(['plan', repo, '--format', 'markdown']);

    say('vmplace apply: Quick Storage Migration while the guest keeps writing');
    const before = await acks(serialLog);
    const code = await vmplace(['apply', repo, '--yes', '--state-dir', stateDir]);
    await sleep(1500);
    const after = await acks(serialLog);

    say(`status/vms/${VM}.yaml`);
    process.stdout.write(fs.readFileSync(path.join(repo, 'status', 'vms', `${VM}.yaml`), 'utf8'));
    say('Where the disks are now');
    console.log((await virsh('domblklist', VM)).stdout.trim());
    // moved disks live in the VM's own directory of the target storage
    const files = (dir) =>
      fs
        .readdirSync(dir, { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile())
        .map((e) => path.relative(dir, path.join(e.parentPath ?? e.path, e.name)))
        .join(', ') || '(empty)';
    console.log(`storage a: ${files(path.join(STORAGE, 'a'))}`);
    console.log(`storage b: ${files(path.join(STORAGE, 'b'))}`);
    console.log(
      `guest acks before the move ${JSON.stringify(before)}, after ${JSON.stringify(after)}: it kept writing`,
    );
    console.log(
      `\ndemo finished in ${((Date.now() - t0) / 1000).toFixed(1)} s, vmplace apply exited ${code}`,
    );
    if (code !== 0) process.exitCode = 1;
  } finally {
    if (keep)
      console.log(
        `\n--keep: the VM ${VM}, ${STORAGE} and ${repo} are left; remove with: node scripts/demo.js --clean`,
      );
    else {
      await cleanup(repo);
      console.log('cleaned up: VM undefined, demo storage and repository removed');
    }
  }
}

if (process.argv.includes('--clean')) cleanup().then(() => console.log('cleaned up'));
else
  main().catch((err) => {
    console.error(`demo failed: ${err.message}`);
    process.exitCode = 1;
  });
