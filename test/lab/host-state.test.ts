/**
 * Host-bound firmware state across hosts on the two-host lab (issue 9 item 6): a VM whose UEFI
 * variables live in an NVRAM file on its host is not moved to another host (vmplace does not
 * carry NVRAM or TPM state): the move is blocked in Preflight with `NvramNotMovable`, and
 * nothing of the VM is deleted or changed on the source. (An emulated TPM cannot be tested
 * here: libvirt refuses to define one without swtpm, which this lab does not install; the
 * `TpmStateNotMovable` finding and the undefine flags are unit-tested.)
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { XMLBuilder } from 'fast-xml-parser';
import { parse } from 'yaml';
import { LibvirtDriver } from '../../src/drivers/libvirt/driver';
import type { VirtualMachineStatus } from '../../src/types';
import { run, VMPLACE_BIN } from './support/fleet';
import {
  ensureHosts,
  labHostDrivers,
  labTempDir,
  twoHostManifests,
  type HostsEnv,
  type LabHostName,
} from '../../src/lab';

jest.setTimeout(300_000);

const MiB = 1024 * 1024;
let env: HostsEnv;
let d: Record<LabHostName, LibvirtDriver>;
let root: string;
const name = `vmpn-nvram-${process.pid}`;

beforeAll(async () => {
  env = await ensureHosts();
  d = labHostDrivers(env);
  root = await labTempDir('vmplace-hoststate-');
});

afterAll(async () => {
  for (const h of ['hv1', 'hv2'] as const) {
    await d[h].destroy(name).catch(() => undefined);
    await d[h]
      .virsh(['undefine', '--domain', name, '--nvram'], { allowExitCodes: [1] })
      .catch(() => undefined);
    for (const f of ['disk.qcow2', 'VARS.fd'])
      await d[h].removeFile(path.posix.join(env.hosts[h].storage, `${name}-${f}`)).catch(() => undefined);
    await d[h].close();
  }
  await fs.rm(root, { recursive: true, force: true });
});

function manifests(host: LabHostName): string {
  return twoHostManifests(env, [{ name, host, storage: 'local' }], { cluster: false });
}

const sha = async (h: LabHostName, file: string): Promise<string> => d[h].checksum(file);

describe('host-bound firmware state across hosts', () => {
  it('a running VM with an NVRAM file is not moved to another host: Blocked NvramNotMovable, nothing deleted', async () => {
    const storage = env.hosts.hv1.storage;
    const disk = path.posix.join(storage, `${name}-disk.qcow2`);
    const nvram = path.posix.join(storage, `${name}-VARS.fd`);
    await d.hv1.exec.run(['qemu-img', 'create', '-q', '-f', 'qcow2', disk, String(16 * MiB)]);
    await d.hv1.exec.run(['qemu-io', '-f', 'qcow2', '-c', `write -P 0x5a 0 ${MiB}`, disk]);
    await d.hv1.exec.run(['sh', '-c', 'head -c 131072 /dev/urandom > "$1"', 'sh', nvram]);
    const xml = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', format: true }).build({
      domain: {
        '@_type': 'qemu',
        name,
        memory: { '@_unit': 'MiB', '#text': '64' },
        vcpu: '1',
        os: {
          type: { '@_arch': 'x86_64', '@_machine': 'q35', '#text': 'hvm' },
          // SeaBIOS as the pflash code: firmware with a separate variables file, no OVMF needed
          loader: { '@_readonly': 'yes', '@_type': 'pflash', '#text': '/usr/share/seabios/bios-256k.bin' },
          nvram,
        },
        features: { acpi: '' },
        devices: {
          disk: {
            '@_type': 'file',
            '@_device': 'disk',
            driver: { '@_name': 'qemu', '@_type': 'qcow2' },
            source: { '@_file': disk },
            target: { '@_dev': 'vda', '@_bus': 'virtio' },
          },
          memballoon: { '@_model': 'none' },
        },
      },
    });
    await d.hv1.define(xml);
    await d.hv1.start(name);
    const before = { disk: await sha('hv1', disk), nvram: await sha('hv1', nvram) };

    const repo = path.join(root, 'repo');
    await fs.mkdir(path.join(repo, 'manifests'), { recursive: true });
    await fs.writeFile(path.join(repo, 'manifests', 'fleet.yaml'), manifests('hv2'));
    const res = await run(process.execPath, [
      VMPLACE_BIN,
      'apply',
      repo,
      '--yes',
      '--state-dir',
      path.join(root, 'state'),
      '--log-format',
      'json',
    ]);
    expect(res.code).toBe(1);
    const status = parse(
      await fs.readFile(path.join(repo, 'status', 'vms', `${name}.yaml`), 'utf8'),
    ) as VirtualMachineStatus;
    expect(status.phase).toBe('Blocked');
    expect(status.conditions[0]?.reason).toBe('NvramNotMovable');
    expect(status.conditions[0]?.message).toContain(nvram);

    // nothing moved, nothing deleted: the VM runs on hv1 from its disk with its NVRAM
    const dom = await d.hv1.getDomain(name);
    expect(dom).toMatchObject({ state: 'running', persistent: true, nvram });
    expect(dom!.disks[0]!.path).toBe(disk);
    expect(await d.hv2.getDomain(name)).toBeUndefined();
    expect(await d.hv2.fileExists(path.posix.join(env.hosts.hv2.storage, `${name}-disk.qcow2`))).toBe(false);
    await d.hv1.destroy(name);
    expect({ disk: await sha('hv1', disk), nvram: await sha('hv1', nvram) }).toEqual(before);
  });
});
