/**
 * The fenced driver and transport (src/coord/fenced.ts): a run whose fence refuses starts no
 * side effect on a host. The contract's methods are enumerated from two implementations, the
 * real LibvirtDriver's prototype and the FAKE driver's (their common methods: a private helper
 * of one is not in the other), so a method added to the contract is checked here without
 * editing this test: it must be refused unless someone put it on the read-only list.
 */
import { fencedDriver, fencedTransport, READ_ONLY_DRIVER_METHODS } from '../../../src/coord/fenced';
import type { HypervisorDriver } from '../../../src/drivers/driver';
import { LibvirtDriver } from '../../../src/drivers/libvirt/driver';
import { FencedError, isFenced } from '../../../src/errors';
import type { Fence } from '../../../src/machine/fence';
import { localTransport, type Transport } from '../../../src/transfer/transport';
import { FakeDriver, FakeTransport, FakeWorld } from '../../support/fake-hypervisor';

/** Method names on a prototype chain (up to Object.prototype), without the constructor. */
function methodsOf(proto: object | null): Set<string> {
  const out = new Set<string>();
  for (let p = proto; p && p !== Object.prototype; p = Object.getPrototypeOf(p) as object | null) {
    for (const name of Object.getOwnPropertyNames(p)) {
      const d = Object.getOwnPropertyDescriptor(p, name);
      if (name !== 'constructor' && d && typeof d.value === 'function') out.add(name);
    }
  }
  return out;
}

const libvirtMethods = methodsOf(LibvirtDriver.prototype);
const fakeMethods = methodsOf(FakeDriver.prototype);
/** the HypervisorDriver contract's methods, as both implementations have them */
const CONTRACT = [...libvirtMethods].filter((m) => fakeMethods.has(m)).sort();
const EFFECTS = CONTRACT.filter((m) => !READ_ONLY_DRIVER_METHODS.has(m));
const READS = CONTRACT.filter((m) => READ_ONLY_DRIVER_METHODS.has(m));

const refusing: Fence = {
  revision: '42',
  check: () => {
    throw new FencedError('replica r1 no longer holds the lock of VM web: nothing started');
  },
  held: () => false,
  ready: () => Promise.reject(new FencedError('replica r1 no longer holds the lock of VM web')),
};
const open: Fence = {
  revision: '42',
  check: () => undefined,
  held: () => true,
  ready: () => Promise.resolve(),
};

/** A driver whose every contract method records its call (the real one would touch a host). */
function recordingDriver(): { driver: HypervisorDriver; calls: string[] } {
  const calls: string[] = [];
  const target: Record<string, unknown> = { hostName: 'hv' };
  for (const m of CONTRACT)
    target[m] = function (this: unknown, ...args: unknown[]) {
      calls.push(m);
      // the proxy calls the method on the driver itself (private fields work)
      expect(this).toBe(target);
      void args;
      return Promise.resolve(`${m} ran`);
    };
  return { driver: target as unknown as HypervisorDriver, calls };
}

describe('the contract as enumerated', () => {
  it('has the methods the steps use, and every read-only name is one of them', () => {
    // a sanity floor: the enumeration found the contract, not an empty intersection
    for (const m of ['save', 'restore', 'define', 'undefine', 'removeFile', 'moveDiskLive', 'migrateLive'])
      expect(EFFECTS).toContain(m);
    for (const m of ['getDomain', 'listDomains', 'imageInfo', 'fileExists']) expect(READS).toContain(m);
    // a stale name on the read-only list (a renamed method) would let nothing through by mistake,
    // but it hides that the renamed method is now fenced: keep the list true
    expect([...READ_ONLY_DRIVER_METHODS].filter((m) => !CONTRACT.includes(m))).toEqual([]);
  });
});

describe('fencedDriver', () => {
  it.each(EFFECTS)('%s is refused before the driver is called when the fence refuses', async (m) => {
    const { driver, calls } = recordingDriver();
    const fenced = fencedDriver(driver, refusing) as unknown as Record<string, (...a: unknown[]) => unknown>;
    let err: unknown;
    try {
      await fenced[m]!('web', '/pool/a/web/x');
    } catch (e) {
      err = e;
    }
    expect(isFenced(err)).toBe(true);
    expect(calls).toEqual([]);
  });

  it.each(EFFECTS)('%s runs once when the fence lets it', async (m) => {
    const { driver, calls } = recordingDriver();
    const fenced = fencedDriver(driver, open) as unknown as Record<string, (...a: unknown[]) => unknown>;
    await expect(fenced[m]!('web')).resolves.toBe(`${m} ran`);
    expect(calls).toEqual([m]);
  });

  it.each(READS)('%s (read-only) passes even when the fence refuses', async (m) => {
    const { driver, calls } = recordingDriver();
    const fenced = fencedDriver(driver, refusing) as unknown as Record<string, (...a: unknown[]) => unknown>;
    await expect(fenced[m]!('web')).resolves.toBe(`${m} ran`);
    expect(calls).toEqual([m]);
  });

  it('asks the fence at each call, not once: a lock lost mid-step stops the next effect', async () => {
    let held = true;
    const fence: Fence = {
      revision: '7',
      check: () => {
        if (!held) throw new FencedError('lost');
      },
      ready: () => (held ? Promise.resolve() : Promise.reject(new FencedError('lost'))),
      held: () => held,
    };
    const { driver, calls } = recordingDriver();
    const fenced = fencedDriver(driver, fence);
    await fenced.save('web', '/pool/a/web/state');
    held = false;
    await expect(fenced.restore('/pool/a/web/state')).rejects.toBeInstanceOf(FencedError);
    expect(calls).toEqual(['save']);
  });

  it('changes nothing in a FAKE world when refused, and works on it when allowed', async () => {
    const world = new FakeWorld();
    world.addHost('hv', { roots: { '/pool/a': undefined } });
    world.addVm('hv', {
      name: 'web',
      state: 'running',
      disks: [{ target: 'vda', path: '/pool/a/web/vda.qcow2' }],
    });
    const real = world.driver('hv');
    await expect(fencedDriver(real, refusing).destroy('web')).rejects.toBeInstanceOf(FencedError);
    expect(world.host('hv').vms.get('web')!.state).toBe('running');
    expect(world.opCount).toBe(0);
    // read-only calls still see the world (the method is bound to the real driver)
    expect(await fencedDriver(real, refusing).domainState('web')).toBe('running');
    await fencedDriver(real, open).destroy('web');
    expect(world.host('hv').vms.get('web')!.state).toBe('shutoff');
  });
});

describe('fencedTransport', () => {
  // the Transport contract, as the real local transport and the FAKE one both have it
  const local = localTransport({} as never, () => Promise.resolve());
  const fakeMethods = methodsOf(FakeTransport.prototype);
  const TRANSPORT = Object.keys(local)
    .filter((k) => typeof (local as unknown as Record<string, unknown>)[k] === 'function')
    .filter((k) => fakeMethods.has(k))
    .sort();
  const READ_ONLY_TRANSPORT = new Set(['reachable']);

  function recordingTransport(): { t: Transport; calls: string[] } {
    const calls: string[] = [];
    const t: Record<string, unknown> = { name: 'rec' };
    for (const m of TRANSPORT)
      t[m] = (..._args: unknown[]) => {
        calls.push(m);
        return Promise.resolve(`${m} ran`);
      };
    return { t: t as unknown as Transport, calls };
  }

  it('enumerates the contract (copy, reachable)', () => {
    expect(TRANSPORT).toEqual(['copy', 'reachable']);
  });

  it.each(TRANSPORT.filter((m) => !READ_ONLY_TRANSPORT.has(m)))(
    '%s is refused before the transport is called',
    async (m) => {
      const { t, calls } = recordingTransport();
      const f = fencedTransport(t, refusing) as unknown as Record<
        string,
        (...a: unknown[]) => Promise<unknown>
      >;
      await expect(f[m]!('/a', '/b')).rejects.toBeInstanceOf(FencedError);
      expect(calls).toEqual([]);
      const g = fencedTransport(t, open) as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
      await expect(g[m]!('/a', '/b')).resolves.toBe(`${m} ran`);
      expect(calls).toEqual([m]);
    },
  );

  it('lets reachable through when the fence refuses, and keeps the name', async () => {
    const { t, calls } = recordingTransport();
    const f = fencedTransport(t, refusing);
    await expect(f.reachable()).resolves.toBe('reachable ran');
    expect(calls).toEqual(['reachable']);
    expect(f.name).toBe('rec');
  });

  it('keeps working over a class-based transport (the FAKE one): its methods are not lost', async () => {
    const world = new FakeWorld();
    world.addHost('hv', { roots: { '/pool/a': undefined } });
    const f = fencedTransport(world.transport('hv', 'hv')!, open);
    expect(f.name).toBe('fake-local');
    await expect(f.reachable()).resolves.toBe(true);
  });
});
