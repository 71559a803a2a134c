/**
 * The tcp channel's pure parts (rsync-daemon.ts): the daemon's configuration for one part file,
 * the source's push argv, and the target's scripts. What the daemon really admits and refuses
 * is proven on the two-host lab (test/lab/hosts/copy-between-hosts.test.ts).
 */
import {
  START_DAEMON_SCRIPT,
  STOP_DAEMON_SCRIPT,
  daemonConfig,
  daemonFiles,
  daemonPushArgv,
} from '../../../src/transfer/rsync-daemon';

const PART = '/srv/vmplace/local/web-01.state.vmplace-part';

describe('daemonConfig', () => {
  it('lets exactly the part file in, write-only, unlisted, authenticated, with its files beside it', () => {
    const conf = daemonConfig(PART)!;
    const lines = conf.split('\n');
    expect(lines).toEqual(
      expect.arrayContaining([
        '[m]',
        'path = /srv/vmplace/local',
        'read only = no',
        'write only = yes',
        'list = no',
        'auth users = vmplace',
        `secrets file = ${PART}.rsyncd.secret`,
        `lock file = ${PART}.rsyncd.lock`,
        'strict modes = yes',
        'include = /web-01.state.vmplace-part',
        'exclude = *',
        'use chroot = no',
      ]),
    );
    // the include comes before the exclude: rsync takes the first rule that matches
    expect(lines.indexOf('include = /web-01.state.vmplace-part')).toBeLessThan(lines.indexOf('exclude = *'));
    // nothing for uid/gid: the target's script writes its own user first
    expect(conf).not.toMatch(/^(uid|gid)\b/m);
    expect(daemonFiles(PART)).toEqual({
      conf: `${PART}.rsyncd.conf`,
      secret: `${PART}.rsyncd.secret`,
      lock: `${PART}.rsyncd.lock`,
    });
  });

  it.each([
    ['a space', '/srv/vmplace/local/web 01.vmplace-part'],
    ['a newline (a second parameter)', '/srv/vmplace/local/x\nuid = 0\n.vmplace-part'],
    ["rsync's %VAR% expansion", '/srv/%HOME%/x.vmplace-part'],
    ['a wildcard in the filter', '/srv/vmplace/local/*.vmplace-part'],
    ['a bracket in the filter', '/srv/vmplace/local/[a].vmplace-part'],
    ['a relative path', 'srv/vmplace/local/x.vmplace-part'],
    ['a dot-dot component', '/srv/vmplace/../etc/x.vmplace-part'],
    ['a hidden name', '/srv/vmplace/local/.x'],
    ['a backslash', '/srv/vmplace/local/x\\y'],
    ['a non-ASCII letter', '/srv/vmplace/local/wéb.vmplace-part'],
  ])('refuses a path with %s (the copy goes through ssh)', (_why, part) => {
    expect(daemonConfig(part)).toBeUndefined();
  });
});

describe('daemonPushArgv', () => {
  it('pushes one file into the module, the secret on standard input, never in the argv', () => {
    const argv = daemonPushArgv('/srv/vmplace/local/web-01.state', PART, '10.0.0.12', 24_001);
    expect(argv).toEqual([
      'env',
      'LC_ALL=C',
      'rsync',
      '--inplace',
      '--sparse',
      '--ignore-times',
      '-s',
      '--perms',
      '--stats',
      '--timeout=60',
      '--contimeout=5',
      '--password-file=-',
      '--',
      '/srv/vmplace/local/web-01.state',
      'rsync://vmplace@10.0.0.12:24001/m/web-01.state.vmplace-part',
    ]);
    expect(argv.join(' ')).not.toMatch(/RSYNC_PASSWORD/);
  });

  it('brackets IPv6, passes a bandwidth limit, and refuses hostile addresses', () => {
    expect(daemonPushArgv('/a', PART, 'fd00::12', 24_001, { bwlimitKiBps: 1000.7 })).toEqual(
      expect.arrayContaining([
        '--bwlimit=1000',
        'rsync://vmplace@[fd00::12]:24001/m/web-01.state.vmplace-part',
      ]),
    );
    for (const bad of ['-oProxyCommand=x', 'a b', 'h/x', 'user@h', 'h;reboot'])
      expect(() => daemonPushArgv('/a', PART, bad, 24_001)).toThrow(/bad target address/);
  });
});

describe("the target's scripts", () => {
  it('take every value as a positional parameter, create files only where none exist, and stop only their own daemon', () => {
    // values are never spliced into the script text
    expect(START_DAEMON_SCRIPT).toContain('part=$1 addr=$2 port=$3 life=$4');
    expect(START_DAEMON_SCRIPT).toContain('set -C'); // noclobber: never writes over a file
    expect(START_DAEMON_SCRIPT).toContain('umask 077');
    expect(START_DAEMON_SCRIPT).toMatch(/setsid timeout "\$life" rsync --daemon/);
    // ready only when the daemon itself holds the listening socket, never on a mere connection
    expect(START_DAEMON_SCRIPT).toContain('/proc/net/tcp');
    expect(START_DAEMON_SCRIPT).not.toContain('/dev/tcp');
    expect(STOP_DAEMON_SCRIPT).toContain('grep -qxF -- "--config=$part.rsyncd.conf"');
  });
});

describe('STOP_DAEMON_SCRIPT, run here on real processes', () => {
  it('kills the whole process group at once (what would ignore SIGTERM too), waits until it is gone, and removes the files', async () => {
    const { spawn } = await import('node:child_process');
    const { mkdtempSync, writeFileSync, existsSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { LocalExec } = await import('../../../src/exec/exec');
    const dir = mkdtempSync(join(tmpdir(), 'vmp-stop-'));
    const part = join(dir, 'x.vmplace-part');
    for (const f of ['conf', 'secret', 'lock']) writeFileSync(`${part}.rsyncd.${f}`, 'x');
    // as the start script runs it: setsid timeout ... with the configuration in its argv; the
    // group's children ignore SIGTERM (as a daemon's child busy in a write might not end at once)
    const child = spawn(
      'setsid',
      [
        'timeout',
        '60',
        'sh',
        '-c',
        'trap "" TERM; sleep 30 & sleep 30 & wait',
        'sh',
        `--config=${part}.rsyncd.conf`,
      ],
      { stdio: 'ignore' },
    );
    const pid = child.pid!;
    const alive = (): boolean => {
      try {
        process.kill(-pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 100 && !alive(); i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 200)); // the sleeps started
    expect(alive()).toBe(true);
    try {
      const exited = new Promise((r) => child.once('exit', r));
      const t0 = Date.now();
      await new LocalExec().run(['bash', '-c', STOP_DAEMON_SCRIPT, 'vmplace-rsyncd-stop', String(pid), part]);
      const took = Date.now() - t0;
      // the leader is this process's child here: gone once reaped (on a host, init reaps it)
      await exited;
      for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 20));
      expect(alive()).toBe(false);
      // killed at once, not waited for (nor their zombies after the kill)
      expect(took).toBeLessThan(1500);
      for (const f of ['conf', 'secret', 'lock']) expect(existsSync(`${part}.rsyncd.${f}`)).toBe(false);
    } finally {
      if (alive()) process.kill(-pid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);

  it('a group that ends on the stop is not waited for beyond it', async () => {
    const { spawn } = await import('node:child_process');
    const { LocalExec } = await import('../../../src/exec/exec');
    const part = '/tmp/vmp-stop-quick.vmplace-part';
    const child = spawn(
      'setsid',
      ['timeout', '60', 'sh', '-c', 'sleep 30', 'sh', `--config=${part}.rsyncd.conf`],
      {
        stdio: 'ignore',
      },
    );
    const pid = child.pid!;
    await new Promise((r) => setTimeout(r, 200));
    const alive = (): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    expect(alive()).toBe(true); // running, its argv naming the part: the script's to stop
    // this process does not reap its child while the script runs (a busy parent, or none yet)
    const t0 = Date.now();
    try {
      await new LocalExec().run(['bash', '-c', STOP_DAEMON_SCRIPT, 'vmplace-rsyncd-stop', String(pid), part]);
      expect(Date.now() - t0).toBeLessThan(2000);
      // stopped: a zombie now, or reaped already
      const stat = await import('node:fs')
        .then((fs) => fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
        .catch(() => 'gone');
      expect(stat === 'gone' || / Z /.test(stat)).toBe(true);
    } finally {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  });

  it("leaves a process alone whose command line does not name this part's configuration", async () => {
    const { spawn } = await import('node:child_process');
    const { LocalExec } = await import('../../../src/exec/exec');
    const child = spawn('setsid', ['sleep', '30'], { stdio: 'ignore' });
    const pid = child.pid!;
    await new Promise((r) => setTimeout(r, 100));
    try {
      await new LocalExec().run([
        'bash',
        '-c',
        STOP_DAEMON_SCRIPT,
        'vmplace-rsyncd-stop',
        String(pid),
        '/tmp/nope.vmplace-part',
      ]);
      expect(() => process.kill(pid, 0)).not.toThrow();
    } finally {
      process.kill(pid, 'SIGKILL');
    }
  });
});
