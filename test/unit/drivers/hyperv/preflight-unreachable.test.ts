/**
 * Issue 15: the migration machine's Preflight step against a Hyper-V host that does not answer
 * (its ssh fails to connect): it fails with `HostUnreachable` naming the host, having sent
 * nothing but the one look at the VM (nothing changed on any host).
 */
import { HyperVDriver } from '../../../../src/drivers/hyperv/driver';
import { newStepMemo } from '../../../../src/machine/steps/deps';
import { preflight } from '../../../../src/machine/steps/preflight';
import type { MigrationContext } from '../../../../src/machine/types';
import { windowsLocalTransport } from '../../../../src/drivers/hyperv/transport';
import { ScriptedHost, sshRefused } from './scripted-host';

it('Preflight on a Hyper-V host whose ssh does not connect: HostUnreachable naming the host, nothing sent but a look', async () => {
  const raw = new ScriptedHost('vmplace@hv-dead:2222');
  for (const kind of ['vmDisks', 'hostInfo', 'vmState', 'listVms'])
    raw.answer(kind, sshRefused('vmplace@hv-dead:2222'));
  const drv = new HyperVDriver(
    'hv-dead',
    {
      driver: 'hyperv',
      uri: 'ssh://vmplace@hv-dead:2222',
      ssh: { host: 'hv-dead', user: 'vmplace', port: 2222 },
    },
    { allowedRoots: ['D:\\VMs', 'E:\\Fast'], runner: raw },
  );
  const ctx = {
    id: '20260302T100000-7f3a01',
    vm: 'web-01',
    strategy: 'live',
    fromHost: 'hv-dead',
    toHost: 'hv-dead',
    moves: [{ target: 'sda', toStorage: 'fast', toPath: 'E:\\Fast', fromStorage: 'local' }],
    targetMarginBytes: 0,
    sourceHeadroomRatio: 0.1,
    maxForwardAttempts: 3,
    disks: [],
    memoryBytes: 0,
    bytesDone: 0,
    bytesTotal: 0,
    startedAt: '2026-03-02T10:00:00Z',
    committed: false,
    attempts: 0,
  } as MigrationContext;
  const err = await preflight(ctx, {
    driverFor: () => drv,
    transportFor: () => windowsLocalTransport(drv),
    memo: newStepMemo(),
  }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toMatchObject({
    reason: 'HostUnreachable',
    message:
      'Hyper-V host hv-dead (vmplace@hv-dead:2222) does not answer over ssh: ssh: connect to host hv1 port 22: Connection refused',
  });
  expect(new Set(raw.kinds())).toEqual(new Set(['vmDisks', 'hostInfo']));
});
