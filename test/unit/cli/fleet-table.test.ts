/**
 * `vmplace status`'s table (issue 11): golden output for the examples/fleet status files plus
 * migrations in every kind of step. `UPDATE_GOLDEN=1` rewrites the golden file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readFleet } from '../../../src/app/fleet';
import { fleetRow, formatPause, renderFleetTable } from '../../../src/cli/fleet-table';
import type { MigrationStatus, VirtualMachineStatus } from '../../../src/types';
import { vmStatus } from '../../support/builders';

const ROOT = path.resolve(__dirname, '../../..');
const GOLDEN = path.join(ROOT, 'test/fixtures/golden/fleet-table.txt');
const GiB = 1024 ** 3;

function migrating(
  name: string,
  from: { host: string; storage: string },
  to: { host: string; storage?: string },
  m: Partial<MigrationStatus>,
  phase: VirtualMachineStatus['phase'] = 'Migrating',
): VirtualMachineStatus {
  return {
    ...vmStatus(name, {
      host: from.host,
      disks: [
        {
          target: 'vda',
          path: `/srv/${from.storage}/${name}.qcow2`,
          storage: from.storage,
          format: 'qcow2',
          virtualBytes: 20 * GiB,
          allocatedBytes: 4 * GiB,
        },
      ],
    }),
    phase,
    migration: {
      id: `m-${name}`,
      strategy: 'quick',
      from,
      to,
      step: 'CopyingBase',
      bytesDone: 0,
      bytesTotal: 0,
      attempts: 1,
      ...m,
    },
  };
}

const inFlight: VirtualMachineStatus[] = [
  migrating(
    'zz-copying',
    { host: 'hv-a', storage: 'local' },
    { host: 'hv-b', storage: 'csv1' },
    {
      step: 'CopyingBase',
      bytesDone: 1.5 * GiB,
      bytesTotal: 4 * GiB,
    },
  ),
  migrating(
    'zz-delta',
    { host: 'hv-a', storage: 'local' },
    { host: 'hv-a', storage: 'csv1' },
    {
      step: 'DeltaRound',
      round: 3,
      bytesDone: 4 * GiB,
      bytesTotal: 4 * GiB,
    },
  ),
  migrating(
    'zz-done',
    { host: 'hv-a', storage: 'local' },
    { host: 'hv-b', storage: 'csv1' },
    { step: 'Completed', bytesDone: 4 * GiB, bytesTotal: 4 * GiB, pauseMs: 640 },
    'Placed',
  ),
  migrating(
    'zz-failed',
    { host: 'hv-a', storage: 'local' },
    { host: 'hv-c' },
    { step: 'Failed', bytesDone: 1 * GiB, bytesTotal: 4 * GiB, pauseMs: 1530 },
    'Failed',
  ),
  vmStatus('zz-unknown'),
];

describe('renderFleetTable', () => {
  it('matches the golden table: examples/fleet and migrations in flight, done and failed', async () => {
    const fleet = await readFleet(path.join(ROOT, 'examples/fleet'));
    expect(fleet.problems).toEqual([]);
    const table = renderFleetTable([...fleet.vms, ...inFlight]);
    if (process.env.UPDATE_GOLDEN) fs.writeFileSync(GOLDEN, table);
    expect(table).toBe(fs.readFileSync(GOLDEN, 'utf8'));
  });

  it('rows are sorted by name, whatever the input order', () => {
    const a = renderFleetTable([vmStatus('b'), vmStatus('a'), vmStatus('c')]);
    expect(a.split('\n').map((l) => l.split(' ')[0])).toEqual(['VM', 'a', 'b', 'c', '']);
  });

  it('no VMs: the empty string (the command says so)', () => {
    expect(renderFleetTable([])).toBe('');
  });

  it('text from status cannot steer the terminal', () => {
    const evil = vmStatus('web');
    evil.placement = { host: 'hv\u001b[2Ja', memoryBytes: 0, disks: [] };
    expect(fleetRow(evil)[1]).toBe('hv?[2Ja');
  });

  it.each([
    [0, '0ms'],
    [640, '640ms'],
    [999, '999ms'],
    [1000, '1.0s'],
    [1530, '1.5s'],
  ])('pause %d ms is shown as %s', (ms, shown) => {
    expect(formatPause(ms)).toBe(shown);
  });
});
