/**
 * The drivers the CLI and the daemon build may delete only inside declared storage: not in
 * vmplace's state dir (issue 9 item 10). A canary file in a temporary state dir shows it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { createDrivers } from '../../../src/drivers/factory';
import type { DesiredState, Host } from '../../../src/types';

it('a host driver refuses to delete in the state dir', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-roots-'));
  const stateDir = path.join(root, 'state');
  const storage = path.join(root, 'a');
  fs.mkdirSync(path.join(stateDir, 'migrations'), { recursive: true });
  fs.mkdirSync(storage);
  const canary = path.join(stateDir, 'migrations', 'web-01.m1.json');
  fs.writeFileSync(canary, '{}');
  const host: Host = {
    apiVersion: 'vmplace.dev/v1alpha1',
    kind: 'Host',
    metadata: { name: 'lab' },
    spec: { driver: 'libvirt', uri: 'qemu:///system', storage: [{ name: 'a', path: storage }] },
    source: { file: 'manifests/h.yaml', line: 1, col: 1 },
  };
  const desired: DesiredState = {
    hosts: new Map([['lab', host]]),
    clusters: new Map(),
    vms: new Map(),
    problems: [],
    invalidFiles: new Set(),
  };
  const drivers = createDrivers(desired, { stateDir, logger: pino({ level: 'silent' }) });
  try {
    const drv = drivers.get('lab')!;
    await expect(drv.removeFile(canary)).rejects.toMatchObject({ reason: 'PathOutsideStorage' });
    expect(fs.existsSync(canary)).toBe(true);
    fs.writeFileSync(path.join(storage, 'x.vmplace-part'), '');
    await drv.removeFile(path.join(storage, 'x.vmplace-part'));
    expect(fs.existsSync(path.join(storage, 'x.vmplace-part'))).toBe(false);
  } finally {
    await drivers.closeAll();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
