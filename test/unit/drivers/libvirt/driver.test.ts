import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { CommandError, StalledError } from '../../../../src/errors';
import type { HostExec } from '../../../../src/exec/types';
import { localTransport } from '../../../../src/transfer/transport';
import { LibvirtDriver, escapeDiskspecValue } from '../../../../src/drivers/libvirt/driver';

const FIX = join(__dirname, '../../../fixtures/libvirt/driver');
const fixture = (name: string): string => readFileSync(join(FIX, name), 'utf8');

type Handler = (
  argv: readonly string[],
  input?: string,
) => { stdout?: string; exitCode?: number } | undefined;

/** A HostExec that records calls and answers from a handler; unknown commands fail. */
class FakeExec implements HostExec {
  readonly calls: { argv: string[]; input?: string }[] = [];
  constructor(
    readonly label: string,
    private readonly handler: Handler,
  ) {}
  async run(argv: readonly string[], opts: { input?: string | Buffer; allowExitCodes?: number[] } = {}) {
    const input = opts.input === undefined ? undefined : String(opts.input);
    this.calls.push({ argv: [...argv], ...(input !== undefined ? { input } : {}) });
    const r = this.handler(argv, input);
    if (!r) throw new CommandError('CommandFailed', argv, 1, 'fake: no answer');
    const exitCode = r.exitCode ?? 0;
    if (exitCode !== 0 && !(opts.allowExitCodes ?? []).includes(exitCode)) {
      throw new CommandError('CommandFailed', argv, exitCode, 'fake failure');
    }
    return { stdout: r.stdout ?? '', stderr: '', exitCode };
  }
  async close() {}
}

/** virsh args after `env LC_ALL=C virsh -c URI` */
const vargs = (argv: readonly string[]): readonly string[] => argv.slice(5);

function makeDriver(
  virsh: Handler,
  host: Handler = (a) => (a[0] === 'realpath' ? { stdout: a.slice(4).join('\0') + '\0' } : undefined),
) {
  const v = new FakeExec('local', (a) => virsh(vargs(a)));
  const h = new FakeExec('host', host);
  const drv = new LibvirtDriver(
    'hv1',
    { driver: 'libvirt', uri: 'qemu:///system' },
    {
      allowedRoots: ['/srv/a'],
      stateDir: '/var/lib/vmplace',
      exec: h,
      virshExec: v,
      blockJobPollMs: 1,
    },
  );
  return { drv, v, h };
}

describe('LibvirtDriver (fake execs)', () => {
  it('runs virsh with the C locale and the URI', async () => {
    const { drv, v } = makeDriver((a) => (a[0] === 'list' ? { stdout: 'vm1\nvm2\n' } : undefined));
    expect(await drv.listDomains()).toEqual(['vm1', 'vm2']);
    expect(v.calls[0]!.argv.slice(0, 5)).toEqual(['env', 'LC_ALL=C', 'virsh', '-c', 'qemu:///system']);
  });

  it('storageLocations lists the target paths of the pools that hold files (recorded pool-dumpxml)', async () => {
    const { drv, v } = makeDriver((a) => {
      if (a[0] === 'pool-list') return { stdout: fixture('pool-list-name.txt') };
      if (a[0] === 'pool-dumpxml' && a[2] === 'images-a') return { stdout: fixture('pool-dumpxml-dir.xml') };
      if (a[0] === 'pool-dumpxml' && a[2] === 'nfs-b') return { stdout: fixture('pool-dumpxml-netfs.xml') };
      if (a[0] === 'pool-dumpxml' && a[2] === 'vg0')
        return {
          stdout: "<pool type='logical'><name>vg0</name><target><path>/dev/vg0</path></target></pool>",
        };
      return undefined;
    });
    expect(await drv.storageLocations()).toEqual([
      { name: 'images-a', path: '/tmp/vmplace-pool-a' },
      { name: 'nfs-b', path: '/srv/nfs-b' },
    ]);
    // the pool name is an argument of --pool, never an option
    expect(vargs(v.calls[1]!.argv)).toEqual(['pool-dumpxml', '--pool', 'images-a']);
  });

  it('storageLocations leaves out a device pool (logical: its target is a device directory)', async () => {
    const { drv } = makeDriver((a) => {
      if (a[0] === 'pool-list') return { stdout: 'vg0\n' };
      if (a[0] === 'pool-dumpxml')
        return {
          stdout: "<pool type='logical'><name>vg0</name><target><path>/dev/vg0</path></target></pool>",
        };
      return undefined;
    });
    expect(await drv.storageLocations()).toEqual([]);
  });

  it('getDomain returns undefined for a domain that does not exist', async () => {
    const { drv } = makeDriver((a) => (a[0] === 'list' ? { stdout: 'other\n' } : undefined));
    expect(await drv.getDomain('nosuch')).toBeUndefined();
  });

  it('getDomain rethrows when the domain exists but virsh fails', async () => {
    const { drv } = makeDriver((a) => (a[0] === 'list' ? { stdout: 'vm\n' } : undefined));
    await expect(drv.getDomain('vm')).rejects.toBeInstanceOf(CommandError);
  });

  it('getDomain combines dominfo and dumpxml', async () => {
    const { drv } = makeDriver((a) =>
      a[0] === 'dominfo'
        ? { stdout: fixture('dominfo-running.txt') }
        : a[0] === 'dumpxml'
          ? { stdout: fixture('dumpxml-after-snapshot.xml') }
          : undefined,
    );
    const d = await drv.getDomain('vmp-rec');
    expect(d).toMatchObject({
      name: 'vmp-rec',
      state: 'running',
      persistent: true,
      memoryBytes: 64 * 1024 * 1024,
      vcpus: 1,
    });
    expect(d!.disks[0]!.hasBackingStore).toBe(true);
  });

  it('snapshotDisks lists external overlays, snapshot=no for the rest, escapes commas', async () => {
    const { drv, v } = makeDriver(
      (a) => {
        if (a[0] === 'dumpxml') return { stdout: fixture('dumpxml-running.xml') };
        if (a[0] === 'snapshot-create-as') return {};
        return undefined;
      },
      (a) =>
        a[0] === 'realpath'
          ? { stdout: a.slice(4).join('\0') + '\0' }
          : a[0] === 'test'
            ? { exitCode: 1 }
            : undefined,
    );
    await drv.snapshotDisks('vmp-rec', [{ target: 'vda', path: '/srv/a/o,1.qcow2' }]);
    const snap = v.calls.find((c) => vargs(c.argv)[0] === 'snapshot-create-as')!;
    expect(vargs(snap.argv)).toEqual([
      'snapshot-create-as',
      '--domain',
      'vmp-rec',
      '--disk-only',
      '--no-metadata',
      '--atomic',
      '--diskspec',
      'vda,snapshot=external,driver=qcow2,file=/srv/a/o,,1.qcow2',
      '--diskspec',
      'vdb,snapshot=no',
      '--diskspec',
      'sda,snapshot=no',
    ]);
  });

  it('snapshotDisks does nothing when the overlays are already active', async () => {
    const xml = fixture('dumpxml-after-snapshot.xml');
    const ovl = /<source file='([^']+a\.ovl)'/.exec(xml)![1]!;
    const root = ovl.replace(/\/a\.ovl$/, '');
    const v = new FakeExec('local', (a) => (vargs(a)[0] === 'dumpxml' ? { stdout: xml } : undefined));
    const h = new FakeExec('host', (a) =>
      a[0] === 'realpath' ? { stdout: a.slice(4).join('\0') + '\0' } : undefined,
    );
    const drv = new LibvirtDriver(
      'hv1',
      { driver: 'libvirt', uri: 'qemu:///system' },
      { allowedRoots: [root], exec: h, virshExec: v },
    );
    await drv.snapshotDisks('vmp-rec', [{ target: 'vda', path: ovl }]);
    expect(v.calls.map((c) => vargs(c.argv)[0])).toEqual(['dumpxml']);
  });

  it('snapshotDisks stops on a leftover overlay file instead of deleting it', async () => {
    const { drv } = makeDriver(
      (a) => (a[0] === 'dumpxml' ? { stdout: fixture('dumpxml-running.xml') } : undefined),
      (a) =>
        a[0] === 'realpath'
          ? { stdout: a.slice(4).join('\0') + '\0' }
          : a[0] === 'test'
            ? { exitCode: 0 }
            : undefined,
    );
    await expect(
      drv.snapshotDisks('vmp-rec', [{ target: 'vda', path: '/srv/a/o.qcow2' }]),
    ).rejects.toMatchObject({
      reason: 'OverlayExists',
    });
  });

  it('refuses writes outside storage before running anything', async () => {
    const { drv, v, h } = makeDriver(() => undefined);
    for (const p of ['/srv/ab/x', '/etc/passwd', '/srv/a/../b/x']) {
      await expect(drv.removeFile(p)).rejects.toMatchObject({ reason: 'PathOutsideStorage' });
      await expect(drv.snapshotDisks('vm', [{ target: 'vda', path: p }])).rejects.toBeInstanceOf(
        StalledError,
      );
      const local = localTransport(drv.exec, (x) => drv.guardPath(x));
      await expect(local.copy('/srv/a/x', p)).rejects.toBeInstanceOf(StalledError);
      await expect(drv.save('vm', p)).rejects.toBeInstanceOf(StalledError);
    }
    expect(v.calls).toHaveLength(0);
    expect(h.calls).toHaveLength(0);
  });

  it('refuses a path whose symlinks resolve outside storage', async () => {
    const { drv, h } = makeDriver(
      () => undefined,
      (a) => (a[0] === 'realpath' ? { stdout: ['/etc/passwd', ...a.slice(5)].join('\0') + '\0' } : {}),
    );
    await expect(drv.removeFile('/srv/a/link')).rejects.toMatchObject({ reason: 'PathOutsideStorage' });
    expect(h.calls.map((c) => c.argv[0])).toEqual(['realpath']);
  });

  it('trusts a path that passed the host-side guard for a few seconds, never one that failed', async () => {
    let outside = true;
    const { drv, h } = makeDriver(
      () => undefined,
      (a) =>
        a[0] === 'realpath'
          ? { stdout: [outside ? '/etc/passwd' : a[4], ...a.slice(5)].join('\0') + '\0' }
          : {},
    );
    await expect(drv.removeFile('/srv/a/x')).rejects.toMatchObject({ reason: 'PathOutsideStorage' });
    outside = false;
    await drv.removeFile('/srv/a/x');
    await drv.removeFile('/srv/a/x');
    await drv.removeFile('/srv/a/y');
    expect(h.calls.map((c) => `${c.argv[0]} ${c.argv[c.argv[0] === 'realpath' ? 4 : 3]}`)).toEqual([
      'realpath /srv/a/x', // refused: not remembered
      'realpath /srv/a/x',
      'rm /srv/a/x',
      'rm /srv/a/x', // trusted: no second realpath
      'realpath /srv/a/y',
      'rm /srv/a/y',
    ]);
  });

  it('blockCommit skips a disk whose active layer is no longer the overlay', async () => {
    const xml = fixture('dumpxml-after-snapshot.xml');
    const { drv, v } = makeDriver((a) =>
      a[0] === 'blockjob' ? { stdout: '' } : a[0] === 'dumpxml' ? { stdout: xml } : undefined,
    );
    await drv.blockCommit('vmp-rec', 'vda', { overlay: '/somewhere/else.ovl' });
    await drv.blockCommit('vmp-rec', 'vdb');
    expect(v.calls.some((c) => vargs(c.argv)[0] === 'blockcommit')).toBe(false);
  });

  it('blockCommit pivots a ready job left by an interrupted run', async () => {
    let pivoted = false;
    const { drv, v } = makeDriver((a) => {
      if (a[0] === 'blockjob' && a.includes('--info'))
        return { stdout: pivoted ? '' : fixture('blockjob-commit-ready-raw.txt') };
      if (a[0] === 'blockjob' && a.includes('--pivot')) {
        pivoted = true;
        return {};
      }
      return undefined;
    });
    await drv.blockCommit('vmp-rec', 'vda');
    expect(v.calls.map((c) => vargs(c.argv)[0])).toEqual(['blockjob', 'blockjob']);
  });

  it('restore passes the XML in a private temp file and is idempotent', async () => {
    const xml = fixture('save-image-dumpxml.xml');
    let running = false;
    let seenXml = '';
    const { drv, v } = makeDriver((a) => {
      if (a[0] === 'list') return { stdout: running ? 'vmp-rec\n' : '' };
      if (a[0] === 'domstate') return { stdout: 'running\n' };
      if (a[0] === 'restore') {
        seenXml = readFileSync(a[a.length - 1]!, 'utf8');
        running = true;
        return {};
      }
      return undefined;
    });
    await drv.restore('/var/lib/vmplace/s', xml);
    await drv.restore('/var/lib/vmplace/s', xml);
    const restores = v.calls.filter((c) => vargs(c.argv)[0] === 'restore');
    expect(restores).toHaveLength(1);
    const args = vargs(restores[0]!.argv);
    expect(args.slice(0, 4)).toEqual(['restore', '--file', '/var/lib/vmplace/s', '--xml']);
    expect(seenXml).toBe(xml);
    expect(existsSync(args[4]!)).toBe(false); // removed afterwards
  });

  it.each([
    [45_500, ['--timeout', '46', '--timeout-suspend']],
    [undefined, []],
  ])(
    'migrateOntoLayers: live, only the listed disks’ top layers, the switch-over bound, and after %s ms a paused finish',
    async (suspendAfterMs, bound) => {
      const { drv: src, v } = makeDriver((a) => {
        if (a[0] === 'dumpxml') return { stdout: fixture('dumpxml-running.xml') };
        if (a[0] === 'migrate-setmaxdowntime' || a[0] === 'migrate') return {};
        return undefined;
      });
      const { drv: dst } = makeDriver((a) =>
        a[0] === 'domjobinfo'
          ? { stdout: 'Job type:         Completed\nTotal downtime:   42 ms\n' }
          : undefined,
      );
      const res = await src.migrateOntoLayers('vmp-rec', dst, {
        address: '10.0.0.2',
        disks: [{ target: 'vda', path: '/srv/a/vmp-rec.vda.overlay.vmplace-m1' }],
        maxDowntimeMs: 50,
        ...(suspendAfterMs === undefined ? {} : { suspendAfterMs }),
      });
      expect(res.downtimeMs).toBe(42);
      const migrate = vargs(v.calls.find((c) => vargs(c.argv)[0] === 'migrate')!.argv);
      expect(migrate.slice(0, 5)).toEqual([
        'migrate',
        '--live',
        '--copy-storage-inc',
        '--migrate-disks',
        'vda',
      ]);
      expect(migrate.slice(migrate.indexOf('--xml') + 2)).toEqual(bound);
      expect(migrate).toContain('tcp://10.0.0.2');
      const downtime = vargs(v.calls.find((c) => vargs(c.argv)[0] === 'migrate-setmaxdowntime')!.argv);
      expect(downtime).toEqual(['migrate-setmaxdowntime', '--domain', 'vmp-rec', '--downtime', '50']);
    },
  );

  it('escapes diskspec commas', () => {
    expect(escapeDiskspecValue('/a,b,,c')).toBe('/a,,b,,,,c');
  });
});
