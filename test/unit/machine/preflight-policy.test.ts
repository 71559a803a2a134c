/** Preflight's pure decisions (src/machine/preflight-policy.ts), row by row. */
import { POSIX_PATHS, type DomainDisk } from '../../../src/drivers/driver';
import { chooseStrategy, judgeDisk, judgePair, placeState } from '../../../src/machine/preflight-policy';

const BASE = { family: 'x', quickStorageMigration: true, quickWithinHost: true, defineOnOtherHost: true };
const ALL = { ...BASE, liveStorageMove: true, liveMigration: true };
const NONE = { ...BASE, liveStorageMove: false, liveMigration: false };
/** a driver with live paths only: no quick storage migration, no define elsewhere */
const LIVE_ONLY = { ...ALL, quickStorageMigration: false, quickWithinHost: false, defineOnOtherHost: false };
/** a driver like Hyper-V's: quick only across hosts (a saved VM registers on another host only) */
const QUICK_ACROSS = { ...ALL, quickWithinHost: false, defineOnOtherHost: false };

describe('chooseStrategy', () => {
  const rows: [string, Parameters<typeof chooseStrategy>[0], string][] = [
    [
      'shut off moves cold whatever was asked',
      { vm: 'v', state: 'shutoff', requested: 'live', cross: true, caps: ALL, direct: true },
      'cold',
    ],
    [
      'running, cold asked: refused',
      { vm: 'v', state: 'running', requested: 'cold', cross: false, caps: ALL, direct: true },
      'DomainRunning',
    ],
    [
      'paused: refused',
      { vm: 'v', state: 'paused', requested: 'quick', cross: false, caps: ALL, direct: true },
      'DomainStateUnsupported',
    ],
    [
      'crashed: refused',
      { vm: 'v', state: 'crashed', requested: 'auto', cross: false, caps: ALL, direct: true },
      'DomainStateUnsupported',
    ],
    [
      'running, quick',
      { vm: 'v', state: 'running', requested: 'quick', cross: true, caps: ALL, direct: true },
      'quick',
    ],
    [
      'running, live on one host',
      { vm: 'v', state: 'running', requested: 'live', cross: false, caps: ALL, direct: true },
      'live',
    ],
    [
      'running, auto on one host',
      { vm: 'v', state: 'running', requested: 'auto', cross: false, caps: ALL, direct: true },
      'live',
    ],
    [
      'running, live across reachable hosts',
      { vm: 'v', state: 'running', requested: 'live', cross: true, caps: ALL, direct: true },
      'live',
    ],
    [
      'running, live across unreachable hosts: quick',
      { vm: 'v', state: 'running', requested: 'live', cross: true, caps: ALL, direct: false },
      'quick!',
    ],
    [
      'running, live on one host without a live storage move: quick',
      { vm: 'v', state: 'running', requested: 'live', cross: false, caps: NONE, direct: true },
      'quick!',
    ],
    [
      'running, auto across hosts without live migration: quick',
      {
        vm: 'v',
        state: 'running',
        requested: 'auto',
        cross: true,
        caps: { ...BASE, liveStorageMove: true, liveMigration: false },
        direct: true,
      },
      'quick!',
    ],
    [
      'running, live on one host with only live migration: quick',
      {
        vm: 'v',
        state: 'running',
        requested: 'live',
        cross: false,
        caps: { ...BASE, liveStorageMove: false, liveMigration: true },
        direct: true,
      },
      'quick!',
    ],
    [
      'no quick storage migration: quick asked is refused',
      { vm: 'v', state: 'running', requested: 'quick', cross: true, caps: LIVE_ONLY, direct: true },
      'StrategyUnsupported',
    ],
    [
      'no quick storage migration, one host: quick asked is refused',
      { vm: 'v', state: 'running', requested: 'quick', cross: false, caps: LIVE_ONLY, direct: true },
      'StrategyUnsupported',
    ],
    [
      'quick across hosts only (Hyper-V): quick across hosts runs quick',
      { vm: 'v', state: 'running', requested: 'quick', cross: true, caps: QUICK_ACROSS, direct: true },
      'quick',
    ],
    [
      'quick across hosts only (Hyper-V): quick within one host is refused',
      { vm: 'v', state: 'running', requested: 'quick', cross: false, caps: QUICK_ACROSS, direct: true },
      'StrategyUnsupported',
    ],
    [
      'quick across hosts only (Hyper-V): auto on one host without a live storage move is refused',
      {
        vm: 'v',
        state: 'running',
        requested: 'auto',
        cross: false,
        caps: { ...QUICK_ACROSS, liveStorageMove: false },
        direct: true,
      },
      'StrategyUnsupported',
    ],
    [
      'quick across hosts only (Hyper-V): auto across unreachable hosts falls back to quick',
      { vm: 'v', state: 'running', requested: 'auto', cross: true, caps: QUICK_ACROSS, direct: false },
      'quick!',
    ],
    [
      'no quick storage migration: auto across reachable hosts runs live',
      { vm: 'v', state: 'running', requested: 'auto', cross: true, caps: LIVE_ONLY, direct: true },
      'live',
    ],
    [
      'no quick storage migration: auto on one host runs live',
      { vm: 'v', state: 'running', requested: 'auto', cross: false, caps: LIVE_ONLY, direct: true },
      'live',
    ],
    [
      'no quick storage migration, hosts unreachable: refused instead of falling back to quick',
      { vm: 'v', state: 'running', requested: 'auto', cross: true, caps: LIVE_ONLY, direct: false },
      'StrategyUnsupported',
    ],
    [
      'no quick storage migration nor live storage move: refused',
      {
        vm: 'v',
        state: 'running',
        requested: 'live',
        cross: false,
        caps: { ...LIVE_ONLY, liveStorageMove: false },
        direct: true,
      },
      'StrategyUnsupported',
    ],
    [
      'emulated guest (TCG), auto across hosts, no policy.liveEmulated: quick, warned',
      {
        vm: 'v',
        state: 'running',
        requested: 'auto',
        cross: true,
        caps: ALL,
        direct: true,
        emulatedNoLive: true,
      },
      'quick!',
    ],
    [
      'emulated guest (TCG), live asked across hosts, no policy.liveEmulated: refused',
      {
        vm: 'v',
        state: 'running',
        requested: 'live',
        cross: true,
        caps: ALL,
        direct: true,
        emulatedNoLive: true,
      },
      'StrategyUnsupported',
    ],
    [
      'emulated guest (TCG), live on one host (a storage move, no memory moves): live',
      {
        vm: 'v',
        state: 'running',
        requested: 'live',
        cross: false,
        caps: ALL,
        direct: true,
        emulatedNoLive: true,
      },
      'live',
    ],
    [
      'emulated guest (TCG), auto across hosts, driver without quick: refused',
      {
        vm: 'v',
        state: 'running',
        requested: 'auto',
        cross: true,
        caps: LIVE_ONLY,
        direct: true,
        emulatedNoLive: true,
      },
      'StrategyUnsupported',
    ],
    [
      'emulated guest, quick asked: quick',
      {
        vm: 'v',
        state: 'running',
        requested: 'quick',
        cross: true,
        caps: ALL,
        direct: true,
        emulatedNoLive: true,
      },
      'quick',
    ],
    [
      'shut off, one host, no define elsewhere: cold',
      { vm: 'v', state: 'shutoff', requested: 'auto', cross: false, caps: LIVE_ONLY, direct: true },
      'cold',
    ],
    [
      'shut off, across hosts, no define elsewhere: refused',
      { vm: 'v', state: 'shutoff', requested: 'auto', cross: true, caps: LIVE_ONLY, direct: true },
      'StrategyUnsupported',
    ],
  ];
  test.each(rows)('%s', (_name, input, want) => {
    const got = chooseStrategy(input);
    const text = 'finding' in got ? got.finding.reason : `${got.strategy}${got.warning ? '!' : ''}`;
    expect(text).toBe(want);
  });
});

describe('judgePair', () => {
  const rows: [string, string, string, boolean, string | undefined][] = [
    ['libvirt to libvirt', 'libvirt', 'libvirt', true, undefined],
    ['libvirt to hyperv', 'libvirt', 'hyperv', true, 'MixedHypervisors'],
    ['hyperv to libvirt, no transport either', 'hyperv', 'libvirt', false, 'MixedHypervisors'],
    ['one family, no transport', 'libvirt', 'libvirt', false, 'NoTransport'],
  ];
  test.each(rows)('%s', (_n, a, b, hasTransport, want) => {
    const f = judgePair({ fromHost: 'a', toHost: 'b', from: { family: a }, to: { family: b }, hasTransport });
    expect(f?.reason).toBe(want);
  });
  test('the reason names both hosts and both hypervisors', () => {
    const f = judgePair({
      fromHost: 'kvm1',
      toHost: 'hv1',
      from: { family: 'libvirt' },
      to: { family: 'hyperv' },
      hasTransport: true,
    });
    expect(f?.message).toMatch(/kvm1 runs libvirt and hv1 runs hyperv/);
  });
});

describe('judgeDisk', () => {
  const file = (over: Partial<DomainDisk> = {}): DomainDisk => ({
    target: 'vda',
    type: 'file',
    device: 'disk',
    path: '/a/v/disk.qcow2',
    format: 'qcow2',
    readonly: false,
    hasBackingStore: false,
    ...over,
  });
  const base = {
    vm: 'v',
    target: 'vda',
    toPath: '/b',
    stays: false,
    cross: false,
    fromHost: 'h1',
    otherUsers: [] as string[],
    paths: POSIX_PATHS,
  };
  const rows: [string, Partial<Parameters<typeof judgeDisk>[0]>, string][] = [
    ['a file disk moves', { disk: file() }, 'copy'],
    ['no such disk', { disk: undefined }, 'DiskNotFound'],
    ['a block disk', { disk: file({ type: 'block', path: undefined }) }, 'DiskNotFile'],
    ['a cdrom', { disk: file({ device: 'cdrom' }) }, 'DiskNotFile'],
    ['shareable, moving', { disk: file({ shareable: true }) }, 'DiskShareable'],
    [
      'shareable, staying on shared storage',
      { disk: file({ shareable: true }), stays: true, toPath: '/a' },
      'stay',
    ],
    ['used by a linked clone', { disk: file(), otherUsers: ['clone'] }, 'DiskUsedByOtherDomain'],
    [
      'used by another VM, but stays',
      { disk: file(), otherUsers: ['clone'], stays: true, toPath: '/a' },
      'stay',
    ],
    ['a backing store in the definition', { disk: file({ hasBackingStore: true }) }, 'DiskHasBackingChain'],
    ['a parent in the image', { disk: file(), parent: '/a/base.qcow2' }, 'DiskHasBackingChain'],
    [
      'stays, but not on the shared path',
      { disk: file(), stays: true, toPath: '/shared' },
      'SharedPathMismatch',
    ],
    ['already on the target storage of this host', { disk: file({ path: '/b/v/disk.qcow2' }) }, 'stay'],
    [
      'on the same path across hosts: copied',
      { disk: file({ path: '/b/v/disk.qcow2' }), cross: true },
      'copy',
    ],
    ['a sibling directory is not inside', { disk: file({ path: '/bb/v/disk.qcow2' }) }, 'copy'],
  ];
  test.each(rows)('%s', (_n, over, want) => {
    const got = judgeDisk({ ...base, disk: file(), ...over });
    expect('finding' in got ? got.finding.reason : got.action).toBe(want);
  });
});

describe('placeState', () => {
  const join = (dir: string): string => `${dir}/v.state.vmplace-1`;
  const rows: [string, Partial<Parameters<typeof placeState>[0]>, ReturnType<typeof placeState>][] = [
    ['cold writes none', { strategy: 'cold' }, { copyState: false }],
    ['live writes none', { strategy: 'live', cross: true }, { copyState: false }],
    [
      'one host: on the target storage',
      { cross: false, sharedStatePath: '/shared' },
      { stateFile: '/b/v.state.vmplace-1', srcStateFile: '/b/v.state.vmplace-1', copyState: false },
    ],
    [
      'across hosts, shared storage the driver restores from: there, nothing copied',
      { cross: true, sharedStatePath: '/shared' },
      { stateFile: '/shared/v.state.vmplace-1', srcStateFile: '/shared/v.state.vmplace-1', copyState: false },
    ],
    [
      'across hosts, shared storage but no driver support: beside the source, copied',
      { cross: true, sharedStatePath: '/shared', stateOnSharedStorage: false },
      { stateFile: '/b/v.state.vmplace-1', srcStateFile: '/a/v.state.vmplace-1', copyState: true },
    ],
    [
      'across hosts, no shared storage: beside the source, copied',
      { cross: true },
      { stateFile: '/b/v.state.vmplace-1', srcStateFile: '/a/v.state.vmplace-1', copyState: true },
    ],
    [
      'across hosts that reach each other, both drivers migrate live onto layers, quickMemory live: no state file',
      { cross: true, pausedMigration: true, liveOntoLayers: true, direct: true, quickMemory: 'live' },
      { copyState: false, migrateMemory: 'live' },
    ],
    [
      'the same with shared storage: live, no state file either',
      {
        cross: true,
        pausedMigration: true,
        liveOntoLayers: true,
        direct: true,
        sharedStatePath: '/shared',
        quickMemory: 'live',
      },
      { copyState: false, migrateMemory: 'live' },
    ],
    [
      'live wanted, but a disk stays on shared storage: paused',
      {
        cross: true,
        pausedMigration: true,
        liveOntoLayers: true,
        direct: true,
        allDisksMove: false,
        quickMemory: 'live',
      },
      { copyState: false, migrateMemory: 'paused' },
    ],
    [
      'policy.quickMemory: paused',
      { cross: true, pausedMigration: true, liveOntoLayers: true, direct: true, quickMemory: 'paused' },
      { copyState: false, migrateMemory: 'paused' },
    ],
    [
      'live wanted, only a paused migration offered: paused',
      { cross: true, pausedMigration: true, direct: true, quickMemory: 'live' },
      { copyState: false, migrateMemory: 'paused' },
    ],
    [
      'paused migration, but the hosts do not reach each other: beside the source, copied',
      { cross: true, pausedMigration: true, liveOntoLayers: true, direct: false, quickMemory: 'live' },
      { stateFile: '/b/v.state.vmplace-1', srcStateFile: '/a/v.state.vmplace-1', copyState: true },
    ],
    [
      'paused migration, but policy.quickMemory: stateFile: beside the source, copied',
      { cross: true, pausedMigration: true, liveOntoLayers: true, direct: true, quickMemory: 'stateFile' },
      { stateFile: '/b/v.state.vmplace-1', srcStateFile: '/a/v.state.vmplace-1', copyState: true },
    ],
    [
      'by default (no policy.quickMemory): the state file, even where both drivers migrate',
      { cross: true, pausedMigration: true, liveOntoLayers: true, direct: true },
      { stateFile: '/b/v.state.vmplace-1', srcStateFile: '/a/v.state.vmplace-1', copyState: true },
    ],
    [
      'one host: a state file on the target storage even where the driver migrates',
      { cross: false, pausedMigration: true, liveOntoLayers: true, direct: true, quickMemory: 'live' },
      { stateFile: '/b/v.state.vmplace-1', srcStateFile: '/b/v.state.vmplace-1', copyState: false },
    ],
    [
      'live: none, whatever the driver offers',
      { strategy: 'live', cross: true, pausedMigration: true, direct: true, quickMemory: 'live' },
      { copyState: false },
    ],
    [
      'across hosts, every disk stays (no copied disk): on the target path, not copied',
      { cross: true, firstSourceDir: undefined },
      { stateFile: '/b/v.state.vmplace-1', srcStateFile: '/b/v.state.vmplace-1', copyState: false },
    ],
  ];
  test.each(rows)('%s', (_n, over, want) => {
    const input: Parameters<typeof placeState>[0] = {
      strategy: 'quick',
      cross: false,
      firstTo: '/b',
      firstSourceDir: '/a',
      stateOnSharedStorage: true,
      join,
      ...over,
    };
    if ('firstSourceDir' in over && over.firstSourceDir === undefined) delete input.firstSourceDir;
    expect(placeState(input)).toEqual(want);
  });
});
