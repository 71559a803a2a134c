/**
 * FAKE hypervisor and stand-in steps for the reconciler's unit tests (pure scheduling logic):
 * an in-memory host that answers only what observation asks (listDomains, getDomain, imageInfo,
 * fsInfo, hostCpu), and step actors that move a VM's disks in that memory when the test lets
 * them. The real steps are proven on real libvirt in test/lab.
 */
import * as path from 'node:path';
import { fromPromise } from 'xstate';
import type { HypervisorDriver } from '../../../src/drivers/driver';
import { STEP_ACTORS, type StepActorName } from '../../../src/machine/migration-machine';
import type { StepActors } from '../../../src/machine/runner';
import type { MigrationContext, StepOutput } from '../../../src/machine/types';
import { desiredState, host, vm } from '../../support/builders';

const GiB = 1024 ** 3;

/** FAKE hypervisor: domains with file disks in memory; only the observation calls. */
export class FakeHost {
  readonly domains = new Map<string, { disks: { target: string; path: string }[] }>();
  driver(name: string): HypervisorDriver {
    const domains = this.domains;
    const observed = {
      hostName: name,
      listDomains: async () => [...domains.keys()],
      getDomain: async (vmName: string) => {
        const d = domains.get(vmName);
        if (!d) return undefined;
        return {
          name: vmName,
          uuid: vmName,
          state: 'running',
          persistent: true,
          memoryBytes: 256 * 1024 * 1024,
          vcpus: 1,
          xml: '',
          disks: d.disks.map((x) => ({
            ...x,
            type: 'file',
            device: 'disk',
            format: 'qcow2',
            readonly: false,
          })),
        };
      },
      imageInfo: async (p: string) => ({
        path: p,
        format: 'qcow2',
        virtualBytes: GiB,
        allocatedBytes: GiB / 2,
        fileBytes: GiB / 2,
        chainLength: 1,
      }),
      fsInfo: async () => ({ capacityBytes: 1000 * GiB, freeBytes: 900 * GiB }),
      hostCpu: async () => ({ vendor: 'Intel', model: 'Skylake' }),
      close: async () => undefined,
    };
    // only what observation calls: anything else throws (the steps are stand-ins)
    return new Proxy(observed, {
      get: (t, k) =>
        k in t
          ? (t as Record<string | symbol, unknown>)[k]
          : () => {
              throw new Error(`fake driver: ${String(k)} is not used by observation`);
            },
    }) as unknown as HypervisorDriver;
  }
}

/** `n` VMs on host `hv`, on storage a, wanted on `want`. */
export function fleet(n: number, want: 'a' | 'b' = 'b') {
  const fake = new FakeHost();
  const objects = [host('hv', { storage: { a: '/srv/a', b: '/srv/b' } })];
  for (let i = 0; i < n; i++) {
    const name = `vm-${i}`;
    objects.push(vm(name, 'hv', want) as never);
    fake.domains.set(name, { disks: [{ target: 'vda', path: `/srv/a/${name}.qcow2` }] });
  }
  return { fake, desired: desiredState(objects) };
}

export type StepScript = Partial<
  Record<StepActorName, (vm: string, input: MigrationContext) => Promise<StepOutput>>
>;

/**
 * Stand-in steps: a migration runs Preflight → ... → Completed; `restoreVm` passes the point of
 * no return; `cleanUpSource` moves the fake disks. `script` overrides single steps.
 */
export function standInSteps(
  fake: FakeHost,
  calls: string[],
  script: StepScript = {},
): (vm: string) => StepActors {
  return (vmName) =>
    Object.fromEntries(
      STEP_ACTORS.map((name) => [
        name,
        fromPromise<StepOutput, MigrationContext>(async ({ input }) => {
          calls.push(`${vmName}:${name}`);
          const own = script[name];
          if (own) return own(vmName, input);
          if (name === 'preflight') return { effectiveStrategy: 'quick' };
          if (name === 'restoreVm') return { committed: true, pauseMs: 7 };
          if (name === 'cleanUpSource') {
            const d = fake.domains.get(vmName)!;
            d.disks = d.disks.map((x) => ({
              ...x,
              path: path.posix.join(input.moves[0]!.toPath, path.posix.basename(x.path)),
            }));
          }
          return {};
        }),
      ]),
    ) as StepActors;
}
