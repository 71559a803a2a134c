/**
 * Issue 15: `vmplace apply` on a Hyper-V fleet whose host does not answer (ssh to 127.0.0.1 on a
 * closed port, the host's key file and known_hosts real but unused): it fails with a clear reason
 * naming the host, exits non-zero, and changes nothing: no status says the VM moved, no file of
 * the repository other than status/ is touched, and no migration is recorded as begun.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { makeRepo } from '../../support/manifests';
import { runCli } from '../../support/cli';
import { cleanupTmp, tmpDir } from '../../support/tmp';

afterAll(cleanupTmp);

const run = runCli;

/** A TCP port on 127.0.0.1 that nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

function files(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = fs.readFileSync(p, 'utf8');
    }
  };
  walk(dir);
  return out;
}

it('apply against a Hyper-V host that does not answer fails naming the host, exits non-zero, changes nothing', async () => {
  const port = await closedPort();
  const keys = tmpDir('vmplace-hv-keys-');
  fs.writeFileSync(path.join(keys, 'id_ed25519'), 'not a key\n', { mode: 0o600 });
  fs.writeFileSync(path.join(keys, 'known_hosts'), '', { mode: 0o600 });
  const repo = makeRepo({
    'manifests/hosts.yaml': `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata:
  name: hv-dead
spec:
  driver: hyperv
  uri: ssh://vmplace@127.0.0.1:${port}
  ssh:
    host: 127.0.0.1
    user: vmplace
    port: ${port}
    identityFile: ${path.join(keys, 'id_ed25519')}
    knownHostsFile: ${path.join(keys, 'known_hosts')}
  storage:
    - name: local
      path: D:\\VMs
    - name: fast
      path: E:\\Hyper-V\\Fast
`,
    'manifests/vms.yaml': `apiVersion: vmplace.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: web-01
spec:
  host: hv-dead
  storage: fast
  strategy: live
`,
    'status/vms/web-01.yaml': `apiVersion: vmplace.dev/v1alpha1
kind: VirtualMachineStatus
metadata:
  name: web-01
observedRevision: 4d2a9c7e1b3f5a6c8e0d2f4a6b8c0e2d4f6a8b0c
placement:
  host: hv-dead
  memoryBytes: 4294967296
  running: true
  disks:
    - target: sda
      path: D:\\VMs\\web-01\\web-01.vhdx
      storage: local
      format: vhdx
      virtualBytes: 64424509440
      allocatedBytes: 12884901888
phase: Pending
conditions:
  - type: Placed
    status: 'False'
    reason: StorageDiffers
    message: on local; desired fast
    lastTransitionTime: 2025-01-15T10:00:00Z
`,
  });
  const stateDir = path.join(tmpDir('vmplace-hv-state-'), 'state');
  const before = files(repo);
  const t0 = Date.now();
  // the log goes to fd 2 through pino's synchronous destination (fs.writeSync): read it there
  let log = '';
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the module object itself, which pino's stream calls
  const nodeFs = require('node:fs') as typeof fs;
  const write = nodeFs.writeSync.bind(nodeFs);
  const spy = jest
    .spyOn(nodeFs, 'writeSync')
    .mockImplementation((fd: number, data: unknown, ...rest: unknown[]) => {
      if (fd === 2 && typeof data === 'string') {
        log += data;
        return Buffer.byteLength(data);
      }
      return (write as (...a: unknown[]) => number)(fd, data, ...rest);
    });
  let r: Awaited<ReturnType<typeof run>>;
  try {
    r = await run('apply', '--yes', '--log-format', 'json', '--state-dir', stateDir, repo);
  } finally {
    spy.mockRestore();
  }
  expect(r.code).toBe(1);
  expect(Date.now() - t0).toBeLessThan(20_000);
  // the reason, naming the host and how vmplace tried to reach it
  const logged = log
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { level: number; host?: string; reason?: string; msg: string });
  expect(logged).toContainEqual(
    expect.objectContaining({
      level: 50,
      host: 'hv-dead',
      reason: 'HostUnreachable',
      msg: expect.stringMatching(
        new RegExp(
          `^Hyper-V host hv-dead \\(vmplace@127\\.0\\.0\\.1:${port}\\) does not answer over ssh: .*Connection refused`,
        ),
      ) as unknown,
    }),
  );
  expect(r.out).toBe(
    'web-01: Unknown (HostUnreachable: web-01 was not found, and not every host could be observed)\n',
  );
  // nothing changed: the manifests as they were, no migration begun or recorded, and the VM's
  // status says nothing is known of it (never that it moved)
  const after = files(repo);
  for (const f of Object.keys(before).filter((f) => !f.startsWith('status/')))
    expect(after[f]).toBe(before[f]);
  expect(Object.keys(after).filter((f) => !f.startsWith('status/'))).toEqual(
    Object.keys(before).filter((f) => !f.startsWith('status/')),
  );
  expect(after['status/vms/web-01.yaml']).toMatch(/^phase: Unknown$/m);
  expect(after['status/vms/web-01.yaml']).not.toMatch(/E:\\Hyper-V\\Fast|migration:|phase: Placed/);
  expect(fs.existsSync(stateDir) ? Object.keys(files(stateDir)) : []).toEqual([]);
}, 60_000);
