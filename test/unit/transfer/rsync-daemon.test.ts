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
