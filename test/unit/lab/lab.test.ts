/**
 * The pure parts of the lab library (src/lab) that the lab tests, the benchmarks and the demo
 * share: the guest's domain XML, reading its acknowledgements, the hosts-up.sh env file.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import {
  domainFiles,
  guestDomainXml,
  labVmCleanupArgv,
  parseAcks,
  parseHostsEnv,
  serialSince,
} from '../../../src/lab';
import { execFileSync } from 'node:child_process';
import { cleanupTmp, tmpDir } from '../../support/tmp';

afterAll(cleanupTmp);

const guest = { kernel: '/cache/vmlinuz', initrd: '/cache/initrd.img' };
const spec = {
  name: 'vm-1',
  disks: [
    { target: 'vda', path: '/srv/a/vm-1-vda.qcow2' },
    { target: 'vdb', path: "/srv/a/it's & <odd>.raw", format: 'raw' as const },
  ],
  serialLog: '/srv/a/serial.log',
  guest,
};

describe('guestDomainXml', () => {
  it('boots the guest under TCG with no_timer_check (a contended vCPU panics in setup_IO_APIC without it)', () => {
    const xml = guestDomainXml(spec);
    expect(xml).toContain('<domain type="qemu">');
    expect(xml).toMatch(/<cmdline>console=ttyS0 no_timer_check panic=-1 [^<]*<\/cmdline>/);
    expect(xml).toContain('vmplace.rate=20 vmplace.maxseq=4095 vmplace.bulk=0');
    expect(xml).not.toContain('vmplace.bulkspan');
  });

  it('passes the benchmarks’ settings (memory, rate, bulk writer and its span) to the guest', () => {
    const xml = guestDomainXml({ ...spec, memoryMiB: 256, rateHz: 10, bulkMiBps: 5, bulkSpanMiB: 448 });
    expect(xml).toContain('<memory unit="MiB">256</memory>');
    expect(xml).toContain('vmplace.rate=10 vmplace.maxseq=4095 vmplace.bulk=5 vmplace.bulkspan=448');
  });

  it("sets a disk's cache mode only when asked (the benchmarks' --guest-cache)", () => {
    expect(guestDomainXml(spec)).not.toContain('cache=');
    const xml = guestDomainXml({ ...spec, disks: spec.disks.map((d) => ({ ...d, cache: 'none' as const })) });
    expect(xml).toContain('<driver name="qemu" type="qcow2" cache="none"');
    expect(xml).toContain('<driver name="qemu" type="raw" cache="none"');
  });

  it('names every disk and the serial log, escaped, so domainFiles reads them back', () => {
    const xml = guestDomainXml(spec);
    expect(xml).toContain('&amp; &lt;odd&gt;');
    expect(domainFiles(xml)).toEqual({
      disks: ['/srv/a/vm-1-vda.qcow2', "/srv/a/it's & <odd>.raw"],
      logs: ['/srv/a/serial.log'],
    });
  });
});

describe('acknowledgements on the serial console', () => {
  it('parseAcks keeps the highest sequence per disk and ignores other lines', () => {
    const text = 'READY uptime=1\r\nACK vda 1\r\nACK vdb 1\n[ 3.1] kernel: ACK vda 99\nACK vda 2\n';
    expect(parseAcks(text)).toEqual(
      new Map([
        ['vda', 2],
        ['vdb', 1],
      ]),
    );
  });

  it('serialSince counts boots and sees a sequence that went back (a reboot, not a restore)', async () => {
    const log = path.join(tmpDir('vmplace-lab-unit-'), 'serial.log');
    await fs.writeFile(log, 'READY a\nACK vda 1\nACK vda 2\n');
    const offset = (await fs.stat(log)).size;
    await fs.appendFile(log, 'ACK vda 3\nREADY b\nACK vda 1\n');
    expect(await serialSince(log, 0)).toMatchObject({ boots: 2, wentBack: ['vda: 3 then 1'] });
    // from an offset, the first (possibly partial) line is skipped
    expect(await serialSince(log, offset)).toMatchObject({ boots: 1, wentBack: [] });
  });
});

describe('parseHostsEnv', () => {
  const env = [
    '# vmplace two-host lab',
    'VMPLACE_HOSTS_PREFIX=vmpbench',
    'VMPLACE_HOSTS_STATE_DIR=/run/vmpbench',
    'VMPLACE_HOSTS_DATA_DIR=/var/lib/vmpbench',
    'MGMT_ADDR=10.231.77.1',
    'MGMT_KEY=/var/lib/vmpbench/mgmt/id_ed25519',
    'MGMT_KNOWN_HOSTS=/var/lib/vmpbench/mgmt/known_hosts',
    'CSV_PATH=/srv/vmplace-csv',
    'CSV_MGMT_PATH=/var/lib/vmpbench/csv',
    ...['hv1', 'hv2'].flatMap((h, i) => {
      const p = h.toUpperCase();
      return [
        `${p}_NS=vmpbench-${h}`,
        `${p}_ADDR=10.231.77.1${i + 1}`,
        `${p}_PORT=22`,
        `${p}_URI=qemu+ssh://root@10.231.77.1${i + 1}/system`,
        `${p}_LINK=eth0`,
        `${p}_STORAGE=/srv/vmplace/local`,
        `${p}_STATE_DIR=/srv/vmplace/state`,
        `${p}_STORAGE_MGMT_PATH=/var/lib/vmpbench/${h}/local`,
        `${p}_TRANSFER_KEY=/root/.ssh/id_ed25519`,
        `${p}_TRANSFER_KNOWN_HOSTS=/root/.ssh/known_hosts`,
      ];
    }),
  ].join('\n');

  it('gives each host the ssh spec of the management key and a libvirt HostSpec', () => {
    const e = parseHostsEnv(env);
    expect(e.prefix).toBe('vmpbench');
    expect(e.hosts.hv2.ssh).toEqual({
      host: '10.231.77.12',
      user: 'root',
      port: 22,
      identityFile: '/var/lib/vmpbench/mgmt/id_ed25519',
      knownHostsFile: '/var/lib/vmpbench/mgmt/known_hosts',
    });
    expect(e.hosts.hv1.hostSpec).toMatchObject({
      driver: 'libvirt',
      uri: 'qemu+ssh://root@10.231.77.11/system',
      transferAddress: '10.231.77.11',
    });
  });

  it('refuses an env file with a key missing instead of guessing', () => {
    expect(() => parseHostsEnv(env.replace(/^HV2_ADDR=.*$/m, ''))).toThrow('HV2_ADDR missing');
  });
});

describe('labVmCleanupArgv', () => {
  it("removes one guest's disks and moved folder, never another guest's whose name it starts", async () => {
    const root = tmpDir('vmplace-lab-clean-');
    const [a, b] = [path.join(root, 'a'), path.join(root, 'b')];
    for (const [dir, names] of [
      [
        a,
        ['vmpx-big-7-vda.qcow2', 'vmpx-big-7.serial.log', 'vmpx-bigger-7-vda.qcow2', 'vmpx-big-70-vda.qcow2'],
      ],
      [b, ['vmpx-big-7/vmpx-big-7-vda.qcow2', 'vmpx-bigger-7/x.qcow2', 'other']],
    ] as const) {
      for (const n of names) {
        await fs.mkdir(path.dirname(path.join(dir, n)), { recursive: true });
        await fs.writeFile(path.join(dir, n), 'x');
      }
    }
    execFileSync(labVmCleanupArgv([a, b], 'vmpx-big-7')[0]!, labVmCleanupArgv([a, b], 'vmpx-big-7').slice(1));
    expect((await fs.readdir(a)).sort()).toEqual(['vmpx-big-70-vda.qcow2', 'vmpx-bigger-7-vda.qcow2']);
    expect((await fs.readdir(b)).sort()).toEqual(['other', 'vmpx-bigger-7']);
  });

  it('refuses a name that is not a plain guest name (a find pattern or a path)', () => {
    for (const bad of ['*', 'vm/..', '-delete', '', 'a b'])
      expect(() => labVmCleanupArgv(['/x'], bad)).toThrow(/not a lab guest name/);
  });
});
