/**
 * The plan blocks what the hosts' driver cannot run, as Preflight would (`StrategyUnsupported`,
 * src/planner/plan.ts strategyFindings from src/drivers/capabilities.ts): on Hyper-V, quick
 * of a running VM within one host (quick only across hosts) and a shut-off VM to another host
 * (no define there); libvirt runs every strategy; a host no manifest declares is left to Preflight.
 */
import { planMigrations } from '../../../src/planner/plan';
import type { ManifestObject, Strategy, VirtualMachineStatus } from '../../../src/types';
import {
  actualState,
  CPU,
  desiredState,
  disk,
  GiB,
  host,
  hostStatus,
  vm,
  vmStatus,
} from '../../support/builders';

const WIN = 'D:\\VMs';
const WIN2 = 'E:\\VMs';
const KVM = '/var/lib/vmplace/local';
const KVM2 = '/srv/fast';

/** The error reasons of VM v's move from `fromHost` to `toHost` (storage `b` on the target). */
function reasons(o: {
  driver?: 'hyperv';
  strategy?: Strategy;
  running?: boolean;
  cross: boolean;
  declared?: boolean;
}): string[] {
  const [a, b] = o.driver === 'hyperv' ? [WIN, WIN2] : [KVM, KVM2];
  const spec = (name: string) => host(name, { ...(o.driver ? { driver: o.driver } : {}), storage: { a, b } });
  const objects: ManifestObject[] = [spec('h1'), ...(o.declared === false ? [] : [spec('h2')])];
  const to = o.cross ? 'h2' : 'h1';
  objects.push(vm('v', to, 'b', o.strategy === undefined ? {} : { strategy: o.strategy }));
  const sep = o.driver === 'hyperv' ? '\\' : '/';
  const st: VirtualMachineStatus = vmStatus('v', {
    host: 'h1',
    disks: [disk('vda', `${a}${sep}v${sep}v.img`)],
  });
  if (o.running !== undefined) st.placement!.running = o.running;
  const free = 500 * GiB;
  const statuses = ['h1', 'h2'].map((n) =>
    hostStatus(n, {
      cpu: CPU,
      storage: [
        { name: 'a', path: a, free },
        { name: 'b', path: b, free },
      ],
    }),
  );
  const plan = planMigrations(desiredState(objects), actualState([...statuses, st]));
  const m = plan.migrations.find((x) => x.vm === 'v');
  if (!m) throw new Error('no migration planned');
  return m.findings.filter((f) => f.severity === 'error').map((f) => f.reason);
}

describe('strategies the driver cannot run are blocked in the plan', () => {
  it.each<[string, Parameters<typeof reasons>[0], string[]]>([
    ['libvirt, quick by default, across hosts', { cross: true }, []],
    ['libvirt, shut off, across hosts (cold)', { cross: true, running: false }, []],
    ['hyperv, quick by default, one host', { driver: 'hyperv', cross: false }, ['StrategyUnsupported']],
    // across hosts Hyper-V restores onto the copies by importing the copied configuration
    ['hyperv, quick asked, across hosts', { driver: 'hyperv', cross: true, strategy: 'quick' }, []],
    [
      'hyperv, quick asked, one host',
      { driver: 'hyperv', cross: false, strategy: 'quick' },
      ['StrategyUnsupported'],
    ],
    ['hyperv, auto, one host', { driver: 'hyperv', cross: false, strategy: 'auto' }, []],
    ['hyperv, live, across hosts', { driver: 'hyperv', cross: true, strategy: 'live', running: true }, []],
    ['hyperv, shut off, one host (cold)', { driver: 'hyperv', cross: false, running: false }, []],
    [
      'hyperv, shut off, across hosts (cold)',
      { driver: 'hyperv', cross: true, running: false, strategy: 'auto' },
      ['StrategyUnsupported'],
    ],
    [
      'hyperv, cold asked, across hosts',
      { driver: 'hyperv', cross: true, strategy: 'cold' },
      ['StrategyUnsupported'],
    ],
  ])('%s', (_name, input, want) => {
    expect(reasons(input)).toEqual(want);
  });
});
