/**
 * The tcp channel opened while the source is still being written (`sourceReady`: the memory
 * state being saved, src/machine/steps/pause.ts). What is proven here is the order of the
 * copy's commands: the daemon starts, and the target is looked at, before the source is ready;
 * nothing reads the source before; the daemon stops beside the finish, and on every way out.
 *
 * The hosts: the real commands on this machine (stat, sha256, the finish script), except the
 * daemon's start and stop (answered here) and the push into it (done here with a local copy):
 * FAKE daemons. What a real rsync daemon admits and refuses, and the channel end to end, are
 * proven on the two-host lab (test/lab/hosts/copy-between-hosts.test.ts).
 */
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { LocalExec, type RunOptions, type RunResult } from '../../../src/exec/exec';
import type { HostExec } from '../../../src/exec/types';
import { copyBetweenHosts } from '../../../src/transfer/between-hosts';
import { PART_SUFFIX } from '../../../src/transfer/copy-local';
import { START_DAEMON_SCRIPT, STOP_DAEMON_SCRIPT } from '../../../src/transfer/rsync-daemon';

interface Event {
  what: string;
  start: number;
  end: number;
}

/** A local host whose daemon commands are answered here; every command recorded in order. */
class ScriptedExec extends LocalExec {
  readonly events: Event[] = [];
  seq = 0;
  /** exit code of the next daemon starts (0: started) */
  startExits: number[] = [];
  /** exit code of the next ssh master starts (0: authenticated) */
  masterExits: number[] = [];
  /** the `-e` value of each rsync over ssh run here */
  readonly rsyncShell: string[] = [];
  constructor(readonly name: string) {
    super();
  }
  override async run(argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
    const e: Event = { what: this.describe(argv), start: this.seq++, end: -1 };
    this.events.push(e);
    try {
      if (argv[2] === START_DAEMON_SCRIPT) {
        const code = this.startExits.shift() ?? 0;
        return { stdout: code === 0 ? '4242\n' : '', stderr: '', exitCode: code };
      }
      if (argv[2] === STOP_DAEMON_SCRIPT) return { stdout: '', stderr: '', exitCode: 0 };
      if (argv[3] === 'vmplace-ssh-master')
        return { stdout: '', stderr: '', exitCode: this.masterExits.shift() ?? 0 };
      if (argv[3] === 'vmplace-ssh-stop') return { stdout: '', stderr: '', exitCode: 0 };
      if (argv.includes('--inplace') && argv.includes('-e')) {
        // rsync over ssh (copyDirect): `... -e SSH -- SRC HOST:PART`, done here with a local copy
        this.rsyncShell.push(argv[argv.indexOf('-e') + 1]!);
        const from = argv[argv.length - 2]!;
        const part = argv[argv.length - 1]!.replace(/^[^:]*:/, '');
        copyFileSync(from, part);
        const n = readFileSync(from).length;
        return {
          stdout: `Literal data: ${n.toLocaleString('en-US')} bytes\nTotal bytes sent: ${(n + 100).toLocaleString('en-US')}\n`,
          stderr: '',
          exitCode: 0,
        };
      }
      if (argv.includes('--password-file=-')) {
        // the push into the daemon: `... -- SRC rsync://vmplace@ADDR:PORT/m/NAME`
        const src = argv[argv.length - 2]!;
        const name = argv[argv.length - 1]!.split('/').pop()!;
        const part = join(this.dir, name);
        copyFileSync(src, part);
        const n = readFileSync(src).length;
        return {
          stdout: `Literal data: ${n.toLocaleString('en-US')} bytes\nTotal bytes sent: ${(n + 100).toLocaleString('en-US')}\n`,
          stderr: '',
          exitCode: 0,
        };
      }
      return await super.run(argv, opts);
    } finally {
      e.end = this.seq++;
    }
  }
  dir = '';
  private describe(argv: readonly string[]): string {
    if (argv[2] === START_DAEMON_SCRIPT) return 'daemon.start';
    if (argv[2] === STOP_DAEMON_SCRIPT) return 'daemon.stop';
    if (argv[3] === 'vmplace-ssh-master') return 'master.start';
    if (argv[3] === 'vmplace-ssh-stop') return 'master.stop';
    if (argv.includes('--inplace') && argv.includes('-e')) return 'rsync.ssh';
    if (argv.includes('--password-file=-')) return 'push';
    if (argv[3] === 'vmplace-finish') return 'finish';
    if (argv[3] === 'vmplace-sha256') return `sha256 ${argv[4]}`;
    if (argv[3] === 'vmplace-stat') return 'stat.target';
    if (argv[0] === 'stat') return `stat ${argv.at(-1)}`;
    return argv.join(' ');
  }
}

/** A source file in `dir` written only once `ready()` is called, as a save writes its state file. */
function pendingSource(
  dir: string,
  bytes: number,
): { path: string; ready: () => void; fail: (e: Error) => void; p: Promise<void> } {
  const path = join(dir, 'vm.state');
  let ready!: () => void;
  let fail!: (e: Error) => void;
  const p = new Promise<void>((res, rej) => {
    ready = () => {
      writeFileSync(path, Buffer.alloc(bytes, 0x5a));
      res();
    };
    fail = rej;
  });
  return { path, ready, fail, p };
}

/** Wait up to ~5 s for `cond`, then assert it. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}

describe('copyBetweenHosts, source still being written (sourceReady)', () => {
  let dir: string;
  let src: ScriptedExec;
  let dst: ScriptedExec;
  const targetSsh = { host: '10.0.0.12', user: 'root' };
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmp-early-'));
    src = new ScriptedExec('src');
    dst = new ScriptedExec('dst');
    src.dir = dir; // the push runs on the source host and writes the part (one machine here)
    dst.dir = dir;
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  describe('copyBetweenHosts, channel tcp, source still being written (sourceReady)', () => {
    /** The copy under test: channel tcp, direct, the source ready once `ready` resolves. */
    const earlyCopy = (from: string, to: string, ready: Promise<void>): ReturnType<typeof copyBetweenHosts> =>
      copyBetweenHosts(src, dst, from, to, { targetSsh, channel: 'tcp', mode: 'direct', sourceReady: ready });
    const daemonStarted = (): boolean => dst.events.some((e) => e.what === 'daemon.start' && e.end >= 0);

    it('starts the daemon and looks at the target before the source is ready; reads the source only after; stops the daemon beside the finish', async () => {
      const s = pendingSource(dir, 3 * 1024 * 1024);
      const to = join(dir, 'copy.state');
      const copying = earlyCopy(s.path, to, s.p);
      await until(daemonStarted);
      // the source is not there yet: nothing on the source host has run
      expect(src.events).toEqual([]);
      expect(dst.events.map((e) => e.what).sort()).toEqual(['daemon.start', 'stat.target']);
      s.ready();
      const r = await copying;
      expect(r).toMatchObject({ channel: 'tcp', mode: 'direct', alreadyDone: false, bytes: 3 * 1024 * 1024 });
      expect(r.channelFallback).toBeUndefined();
      expect(readFileSync(to).equals(readFileSync(s.path))).toBe(true);
      expect(src.events.map((e) => e.what).sort()).toEqual(
        [`sha256 ${s.path}`, 'push', `stat ${s.path}`].sort(),
      );
      // one daemon, started once, stopped once, and its stop ran beside the finish
      const names = dst.events.map((e) => e.what);
      expect(names.filter((n) => n === 'daemon.start')).toHaveLength(1);
      expect(names.filter((n) => n === 'daemon.stop')).toHaveLength(1);
      const finish = dst.events.find((e) => e.what === 'finish')!;
      const stop = dst.events.find((e) => e.what === 'daemon.stop')!;
      expect(stop.start).toBeLessThan(finish.end);
      expect(finish.start).toBeLessThan(stop.end);
      expect(existsSync(to + PART_SUFFIX)).toBe(false);
    });

    it('a source that never becomes ready (a failed save): the copy fails with its reason, the daemon is stopped, nothing is written', async () => {
      const s = pendingSource(dir, 1024);
      const to = join(dir, 'copy.state');
      const copying = earlyCopy(s.path, to, s.p);
      await until(daemonStarted);
      s.fail(new Error('save failed: the guest is gone'));
      await expect(copying).rejects.toThrow('save failed: the guest is gone');
      expect(dst.events.map((e) => e.what)).toContain('daemon.stop');
      expect(src.events.filter((e) => e.what !== `sha256 ${s.path}`)).toEqual([]);
      expect(readdirSync(dir)).toEqual([]);
    });

    it('a daemon that could not start early (port taken): a fresh one is opened for the copy; the channel is still tcp', async () => {
      dst.startExits = [4];
      const s = pendingSource(dir, 1024 * 1024);
      const to = join(dir, 'copy.state');
      const copying = earlyCopy(s.path, to, s.p);
      await until(daemonStarted);
      s.ready();
      const r = await copying;
      expect(r).toMatchObject({ channel: 'tcp' });
      expect(r.channelFallback).toBeUndefined();
      const names = dst.events.map((e) => e.what);
      expect(names.filter((n) => n === 'daemon.start')).toHaveLength(2);
      expect(names.filter((n) => n === 'daemon.stop')).toHaveLength(1); // only the one that ran
    });

    it('neither daemon starts: the copy goes through ssh (here refused: nothing listens on port 1)', async () => {
      dst.startExits = [4, 4];
      const s = pendingSource(dir, 1024 * 1024);
      const to = join(dir, 'copy.state');
      const copying = copyBetweenHosts(src, dst, s.path, to, {
        targetSsh: { host: '127.0.0.1', user: 'root', port: 1 },
        channel: 'tcp',
        mode: 'direct',
        sourceReady: s.p,
        ioTimeoutSec: 2,
      });
      s.ready();
      // copyDirect's failure: rsync over ssh was tried after both daemons failed to start
      await expect(copying).rejects.toMatchObject({
        reason: 'TransferFailed',
        message: expect.stringMatching(/^rsync .* to 127\.0\.0\.1 failed/),
      });
      expect(dst.events.map((e) => e.what).filter((n) => n === 'daemon.start')).toHaveLength(2);
      expect(dst.events.map((e) => e.what)).not.toContain('daemon.stop');
      expect(src.events.map((e) => e.what)).not.toContain('push');
    });

    it('a file small enough for the open connections (relayBelowBytes): the early daemon is stopped unused', async () => {
      const s = pendingSource(dir, 64 * 1024);
      const to = join(dir, 'copy.state');
      const copying = copyBetweenHosts(src, dst, s.path, to, {
        targetSsh,
        channel: 'tcp',
        mode: 'direct',
        sourceReady: s.p,
        relayBelowBytes: 1024 * 1024,
      });
      s.ready();
      const r = await copying;
      expect(r).toMatchObject({ mode: 'relay' });
      expect(src.events.map((e) => e.what)).not.toContain('push');
      expect(dst.events.map((e) => e.what)).toContain('daemon.stop');
      expect(readFileSync(to).equals(readFileSync(s.path))).toBe(true);
    });

    it('without sourceReady nothing starts before the look at both hosts (the daemon after it)', async () => {
      const from = join(dir, 'ready.state');
      writeFileSync(from, Buffer.alloc(512 * 1024, 7));
      const to = join(dir, 'copy.state');
      const r = await copyBetweenHosts(src, dst, from, to, { targetSsh, channel: 'tcp', mode: 'direct' });
      expect(r).toMatchObject({ channel: 'tcp' });
      const start = dst.events.find((e) => e.what === 'daemon.start')!;
      const look = dst.events.find((e) => e.what === 'stat.target')!;
      expect(look.end).toBeLessThan(start.start);
    });
  });

  describe('copyBetweenHosts, through ssh, source still being written (sourceReady)', () => {
    // the source host as a plain HostExec: its rsync then goes through run() (answered above)
    // instead of being spawned here
    const srcHost = (): HostExec => ({ label: 'src', run: (a, o) => src.run(a, o), close: async () => {} });

    /** The copy under test: through ssh, direct, the source ready once `ready` resolves. */
    const sshCopy = (from: string, to: string, ready: Promise<void>): ReturnType<typeof copyBetweenHosts> =>
      copyBetweenHosts(srcHost(), dst, from, to, { targetSsh, mode: 'direct', sourceReady: ready });
    const masterOpen = (): boolean => src.events.some((e) => e.what === 'master.start' && e.end >= 0);
    const names = (h: ScriptedExec): string[] => h.events.map((e) => e.what);

    it('opens the connection to the target before the source is ready; the rsync runs over it; it is closed once, after the copy', async () => {
      const s = pendingSource(dir, 2 * 1024 * 1024);
      const to = join(dir, 'copy.state');
      const copying = sshCopy(s.path, to, s.p);
      await until(masterOpen);
      // nothing else ran on the source host: the source is not there yet
      expect(names(src)).toEqual(['master.start']);
      s.ready();
      const r = await copying;
      expect(r).toMatchObject({ mode: 'direct', channel: 'ssh', alreadyDone: false });
      expect(readFileSync(to).equals(readFileSync(s.path))).toBe(true);
      expect(src.rsyncShell).toHaveLength(1);
      expect(src.rsyncShell[0]).toMatch(
        new RegExp(`'ControlPath=${dir}/\\.vmplace-ssh-[0-9a-f]{12}' '-o' 'ControlMaster=no'`),
      );
      expect(names(src).filter((n) => n === 'master.stop')).toHaveLength(1);
      const stop = src.events.find((e) => e.what === 'master.stop')!;
      const rsync = src.events.find((e) => e.what === 'rsync.ssh')!;
      expect(stop.start).toBeGreaterThan(rsync.end); // never under the running copy
    });

    it('a connection that cannot open: the copy connects on its own, as without sourceReady', async () => {
      src.masterExits = [255];
      const s = pendingSource(dir, 1024 * 1024);
      const to = join(dir, 'copy.state');
      const copying = sshCopy(s.path, to, s.p);
      s.ready();
      await copying;
      expect(src.rsyncShell).toHaveLength(1);
      expect(src.rsyncShell[0]).not.toContain('ControlPath');
      expect(readFileSync(to).equals(readFileSync(s.path))).toBe(true);
    });

    it('a source that never becomes ready: the copy fails with its reason and the connection is closed', async () => {
      const s = pendingSource(dir, 1024);
      const to = join(dir, 'copy.state');
      const copying = sshCopy(s.path, to, s.p);
      await until(masterOpen);
      s.fail(new Error('save failed'));
      await expect(copying).rejects.toThrow('save failed');
      expect(names(src)).toContain('master.stop');
      expect(names(src)).not.toContain('rsync.ssh');
    });

    it('opens none without sourceReady, through the tcp channel, or for a relay', async () => {
      const from = join(dir, 'ready.state');
      writeFileSync(from, Buffer.alloc(256 * 1024, 1));
      await copyBetweenHosts(srcHost(), dst, from, join(dir, 'a'), { targetSsh, mode: 'direct' });
      const s = pendingSource(dir, 256 * 1024);
      const tcp = copyBetweenHosts(srcHost(), dst, s.path, join(dir, 'b'), {
        targetSsh,
        mode: 'direct',
        channel: 'tcp',
        sourceReady: s.p,
      });
      s.ready();
      await tcp;
      expect(names(src)).not.toContain('master.start');
      expect(src.rsyncShell[0]).not.toContain('ControlPath');
    });
  });
});
