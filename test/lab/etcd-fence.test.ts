/**
 * The fence against a real etcd (3 members on loopback, src/lab/etcd.ts): a replica that still
 * believes it holds a VM's lock (it has not heard that the lock went: its watch is silent, as
 * in a process stopped past its lease) writes nothing. Its state write is one transaction that
 * requires the lock's create revision; etcd refuses it, the replica drops the lock, counts the
 * refusal and tells its reconciler at once. The new owner's writes go through.
 */
import pino from 'pino';
import { EtcdCoordination } from '../../src/coord/etcd/coordination';
import { EtcdKeys } from '../../src/coord/etcd/keys';
import { ownerOf } from '../../src/coord/rendezvous';
import { etcdClient } from '../../src/coord/etcd/options';
import { isFenced } from '../../src/errors';
import type { MigrationRecords } from '../../src/machine/store';
import { labTempDir, startEtcdCluster, type EtcdCluster } from '../../src/lab';

jest.setTimeout(120_000);

let cluster: EtcdCluster;
let dir: string;
beforeAll(async () => {
  dir = await labTempDir('vmplace-etcd-fence-');
  cluster = await startEtcdCluster({ dir, name: 'fence' });
});
afterAll(async () => {
  await cluster?.stop();
});

const until = async (what: string, cond: () => boolean | Promise<boolean>, ms = 15_000) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what}: not reached in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

test('a write of a replica that lost its lock unknowingly is refused by etcd; the new owner’s goes through', async () => {
  const prefix = `/fence-${process.pid}/`;
  const opts = (replicaId: string) => ({
    endpoints: cluster.endpoints,
    prefix,
    replicaId,
    leaseTtlMs: 3000,
  });
  const log = pino({ level: 'silent' });
  const a = new EtcdCoordination(opts('a'), log);
  a.start();
  await until('a joined', () => a.health().ready);
  const lost: string[] = [];
  a.onLost((vms) => lost.push(...vms));
  // a VM that b owns once both are members (a, alone at first, takes it)
  const vm = Array.from({ length: 50 }, (_, i) => `web-${i}`).find((v) => ownerOf(v, ['a', 'b']) === 'b')!;
  await a.balance([vm], () => false);
  expect(a.owns(vm)).toBe(true);
  const storeA: MigrationRecords = a.store(undefined as never);
  await storeA.save(vm, 'm1', { value: 'CopyingBase' });

  // a hears nothing more of the locks (its watches are gone, as in a stopped process) while the
  // lock goes (here: deleted, as etcd does at the lease's expiry) and b takes it
  const internals = a as unknown as { watchers: { cancel(): Promise<void> }[] };
  await Promise.all(internals.watchers.map((w) => w.cancel()));
  const admin = etcdClient(opts('admin'));
  const keys = new EtcdKeys(prefix);
  await admin.delete().key(keys.lock(vm));
  const b = new EtcdCoordination(opts('b'), log);
  b.start();
  await until('b joined', () => b.health().ready);
  // b owns the VM by rendezvous hashing over a and b: it takes the free lock
  await until('b holds the lock', async () => {
    await b.balance([vm], () => false);
    return b.owns(vm);
  });
  expect(a.owns(vm)).toBe(true); // a still believes it

  const err = await storeA.save(vm, 'm1', { value: 'Saving' }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isFenced(err)).toBe(true);
  expect(a.owns(vm)).toBe(false);
  expect(a.stats().fencedWrites).toBe(1);
  expect(lost).toEqual([]); // told at the next balance (the refusal drops the lock there)
  expect((await a.balance([], () => true)).lost).toEqual([vm]);
  // what etcd holds is what a wrote while it held the lock
  const rec = JSON.parse((await admin.get(keys.migration(vm, 'm1')).string())!) as { snapshot: unknown };
  expect(rec.snapshot).toEqual({ value: 'CopyingBase' });
  // the new owner writes
  const storeB = b.store(undefined as never);
  await storeB.save(vm, 'm1', { value: 'CopyingBase', by: 'b' });
  expect(
    (JSON.parse((await admin.get(keys.migration(vm, 'm1')).string())!) as { snapshot: unknown }).snapshot,
  ).toEqual({ value: 'CopyingBase', by: 'b' });
  await Promise.all([a.close(), b.close()]);
  admin.close();
});
