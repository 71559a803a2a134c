import type { DesiredState } from '../../../src/types';
import { buildFleetView, diffFleetView, ProgressTracker, type FleetView } from '../../../src/ui/view';
import { syntheticStatuses, syntheticView } from '../../support/fleet-view';

const NOW = new Date('2025-01-01T00:01:00Z');
const DAEMON = { suspended: false, outsideWindow: false, windows: 0, ready: true };

function view(n: number, opts: Partial<Parameters<typeof buildFleetView>[0]> = {}): FleetView {
  const { vms, hosts } = syntheticStatuses(n);
  return buildFleetView({ now: NOW, vms, hosts, recent: [], daemon: DAEMON, ...opts });
}

describe('buildFleetView', () => {
  it('puts each VM under the storage locations of its host, and marks a cluster location', () => {
    const desired = {
      hosts: new Map([['host-00', { spec: { cluster: 'c1' } }]]),
      clusters: new Map([['c1', { spec: { storage: [{ name: 'san', path: '/mnt/san' }] } }]]),
    } as unknown as DesiredState;
    const v = view(6, { desired });
    const h0 = v.hosts.find((h) => h.name === 'host-00')!;
    expect(h0.cluster).toBe('c1');
    expect(h0.storage.map((s) => [s.name, s.kind, s.vms])).toEqual([
      ['ssd', 'local', ['vm-000']],
      ['hdd', 'local', ['vm-004']],
      ['san', 'cluster', ['vm-002']],
    ]);
    expect(v.hosts.find((h) => h.name === 'host-01')!.storage[2]!.kind).toBe('local');
  });

  it('shows a migration in flight with the copy progress reported between steps, its rate and ETA', () => {
    const t = new ProgressTracker();
    t.record('m-5', 1024 ** 3, 12 * 1024 ** 3, 1_000);
    t.record('m-5', 3 * 1024 ** 3, 12 * 1024 ** 3, 2_000);
    const v = view(10, { progress: (id) => t.get(id) });
    const m = v.vms.find((x) => x.name === 'vm-005')!.migration!;
    // the status says 5 GiB at the end of the last step; the copy reported 3 GiB: the larger wins
    expect(m.bytesDone).toBe(5 * 1024 ** 3);
    expect(m.rateBytesPerSec).toBe(2 * 1024 ** 3);
    expect(m.etaSec).toBe(4);
    expect(m.step).toBe('CopyingBase');
  });

  it('gives the reason of a blocked and of a failed VM, and why a VM is held back', () => {
    const v = view(10, { heldBack: new Map([['vm-003', 'outside maintenance windows']]) });
    expect(v.vms.find((x) => x.name === 'vm-007')!.problem).toEqual({
      reason: 'TargetSpaceInsufficient',
      message: 'storage hdd on host-07 has 1 GiB free, 12 GiB needed',
    });
    expect(v.vms.find((x) => x.name === 'vm-008')!.problem?.reason).toBe('ChecksumMismatch');
    expect(v.vms.find((x) => x.name === 'vm-008')!.migration).toBeUndefined();
    expect(v.vms.find((x) => x.name === 'vm-003')!.heldBack).toBe('outside maintenance windows');
    expect(v.vms.find((x) => x.name === 'vm-000')!.problem).toBeUndefined();
  });
});

describe('diffFleetView', () => {
  it('sends only the VMs that changed, the ones removed, and nothing when nothing changed', () => {
    const a = view(50);
    expect(diffFleetView(a, { ...a, at: 'later' })).toBeUndefined();
    const t = new ProgressTracker();
    t.record('m-25', 11 * 1024 ** 3, 12 * 1024 ** 3, 0);
    const b = view(49, { progress: (id) => t.get(id) });
    const p = diffFleetView(a, b)!;
    expect(p.vms?.map((v) => v.name)).toEqual(['vm-025']);
    expect(p.removed).toEqual(['vm-049']);
    expect(p.hosts).toBeDefined(); // vm-049 left its location
    expect(p.daemon).toBeUndefined();
  });
});

describe('ProgressTracker', () => {
  it('restarts the rate when a new step copies from zero, and forgets a finished migration', () => {
    const t = new ProgressTracker(5_000);
    t.record('m', 100, 1000, 0);
    t.record('m', 900, 1000, 1_000);
    t.record('m', 10, 1000, 1_500);
    expect(t.get('m')).toEqual({ bytesDone: 10, bytesTotal: 1000 });
    t.record('m', 210, 1000, 2_500);
    expect(t.get('m')!.rateBytesPerSec).toBe(200);
    t.forget('m');
    expect(t.get('m')).toBeUndefined();
  });
});

describe('a 300-VM fleet', () => {
  it('fits in a snapshot of bounded size, built quickly', () => {
    const t0 = performance.now();
    const v = syntheticView(300);
    const ms = performance.now() - t0;
    const bytes = Buffer.byteLength(JSON.stringify(v));
    console.log(`300 VMs, ${v.hosts.length} hosts: snapshot ${bytes} bytes, built in ${ms.toFixed(1)} ms`);
    expect(v.vms).toHaveLength(300);
    expect(bytes).toBeLessThan(200_000);
  });
});
