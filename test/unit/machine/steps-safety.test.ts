/**
 * The "nothing lost" rules inside the real steps (src/machine/steps.ts), run against a FAKE
 * in-memory hypervisor: files with identities and contents, domains with disks, autostart.
 * Real libvirt proves the same rules in test/lab/nothing-lost.test.ts; this fake makes each
 * rule a fast, exact test of the step's decision.
 */
import { createActor, toPromise } from 'xstate';
import { type DomainInfo, type HypervisorDriver, POSIX_PATHS } from '../../../src/drivers/driver';
import { createStepActors, type StepDeps } from '../../../src/machine/steps';
import type { OwnedFile } from '../../../src/machine/store';
import type { MigrationContext } from '../../../src/machine/types';
import { parseDomainXml, rewriteDiskPaths } from '../../../src/drivers/libvirt/xml';

/** FAKE host: files by path (content + identity), domains, and the calls made. */
class FakeHost {
  files = new Map<string, { content: string; id: string }>();
  domains = new Map<
    string,
    { state: DomainInfo['state']; disks: Record<string, string>; autostart: boolean; persistent: boolean }
  >();
  /** extra users of files (other domains, linked clones) */
  users = new Map<string, Set<string>>();
  calls: string[] = [];
  private nextId = 1;
  constructor(readonly name: string) {}

  put(p: string, content: string): string {
    const id = `1:${this.nextId++}`;
    this.files.set(p, { content, id });
    return id;
  }

  driver(): HypervisorDriver {
    const dom = (name: string): DomainInfo | undefined => {
      const d = this.domains.get(name);
      if (!d) return undefined;
      return {
        name,
        uuid: name,
        state: d.state,
        persistent: d.persistent,
        memoryBytes: 64 << 20,
        vcpus: 1,
        autostart: d.autostart,
        definition: { driver: 'libvirt', data: '' },
        disks: Object.entries(d.disks).map(([target, path]) => ({
          target,
          path,
          type: 'file',
          device: 'disk',
          format: 'qcow2',
          readonly: false,
          hasBackingStore: false,
        })),
      };
    };
    const xmlOf = (name: string): string => {
      const d = this.domains.get(name)!;
      return `<domain><name>${name}</name><devices>${Object.entries(d.disks)
        .map(([t, p]) => `<disk type='file' device='disk'><source file='${p}'/><target dev='${t}'/></disk>`)
        .join('')}</devices></domain>`;
    };
    const drv: Partial<HypervisorDriver> = {
      hostName: this.name,
      capabilities: {
        family: 'libvirt',
        liveStorageMove: true,
        liveMigration: true,
        stateOnSharedStorage: true,
        pausedMigration: false,
        liveOntoLayers: false,
        quickStorageMigration: true,
        quickWithinHost: true,
        defineOnOtherHost: true,
      },
      paths: POSIX_PATHS,
      diskPathsOf: (def) => Object.fromEntries(parseDomainXml(def.data).disks.map((d) => [d.target, d.path])),
      withDiskPaths: (def, disks) => ({
        driver: 'libvirt',
        data: rewriteDiskPaths(
          def.data,
          Object.fromEntries(Object.entries(disks).map(([t, d]) => [t, d.path])),
        ),
      }),
      listDomains: async () => [...this.domains.keys()],
      getDomain: async (n) => dom(n),
      domainState: async (n) => this.domains.get(n)?.state,
      fileExists: async (p) => this.files.has(p),
      fileIdentity: async (p) => this.files.get(p)?.id,
      checksum: async (p) => `sha-${this.files.get(p)?.content}`,
      removeFile: async (p) => {
        this.calls.push(`rm ${p}`);
        this.files.delete(p);
      },
      removeIfIdentity: async (p, id) => {
        const f = this.files.get(p);
        if (!f) return 'absent';
        if (f.id !== id) return 'other';
        this.calls.push(`rm ${p}`);
        this.files.delete(p);
        return 'removed';
      },
      filesInUse: async () => {
        const m = new Map<string, Set<string>>();
        for (const [name, d] of this.domains)
          for (const p of Object.values(d.disks)) m.set(p, new Set([...(m.get(p) ?? []), name]));
        for (const [p, u] of this.users) m.set(p, new Set([...(m.get(p) ?? []), ...u]));
        return m;
      },
      definition: async (n) => ({ driver: 'libvirt', data: xmlOf(n) }),
      undefine: async (n) => {
        this.calls.push(`undefine ${n}`);
        const d = this.domains.get(n);
        if (d && d.state === 'shutoff') this.domains.delete(n);
      },
      setAutostart: async (n, on) => {
        this.calls.push(`autostart ${n} ${on}`);
        this.domains.get(n)!.autostart = on;
      },
      abortJobs: async () => undefined,
      removeDirIfEmpty: async () => undefined,
      restore: async () => {
        this.calls.push('restore');
      },
      savedDefinition: async () => ({
        driver: 'libvirt',
        data: '<domain><name>web</name><devices/></domain>',
      }),
      define: async () => undefined,
      start: async (n) => {
        this.calls.push(`start ${n}`);
      },
      resume: async () => undefined,
    };
    return drv as HypervisorDriver;
  }
}

function ctxBase(over: Partial<MigrationContext> = {}): MigrationContext {
  return {
    id: 'm1',
    vm: 'web',
    strategy: 'quick',
    fromHost: 'h1',
    toHost: 'h1',
    moves: [{ target: 'vda', fromStorage: 'a', toStorage: 'b', toPath: '/b' }],
    targetMarginBytes: 0,
    sourceHeadroomRatio: 0.1,
    maxForwardAttempts: 2,
    disks: [
      {
        target: 'vda',
        format: 'qcow2',
        fromStorage: 'a',
        toStorage: 'b',
        srcPath: '/a/web/disk.qcow2',
        dstPath: '/b/web/disk.qcow2',
        srcOverlay: '/a/web/web.vda.overlay.vmplace-m1',
        dstOverlay: '/b/web.vda.overlay.vmplace-m1',
        virtualBytes: 100,
        allocatedBytes: 100,
        baseChecksum: 'sha-original',
      },
    ],
    memoryBytes: 1,
    bytesDone: 0,
    bytesTotal: 100,
    startedAt: '2026-01-01T00:00:00Z',
    committed: false,
    attempts: 0,
    wasRunning: true,
    effectiveStrategy: 'quick',
    ...over,
  };
}

function depsFor(hosts: Record<string, FakeHost>, owned: OwnedFile[] = []): StepDeps {
  return {
    driverFor: (h) => hosts[h]!.driver(),
    transportFor: () => undefined,
    retryBaseMs: 1,
    owned: {
      record: async (_c, rec) => {
        owned.push(rec);
      },
      list: async () => owned,
    },
  };
}

async function runStep(
  deps: StepDeps,
  name: keyof ReturnType<typeof createStepActors>,
  ctx: MigrationContext,
) {
  const actor = createActor(createStepActors(deps)[name], { input: ctx });
  actor.start();
  return toPromise(actor);
}

describe('CleaningUp deletes a source only when it is provably unused and unchanged', () => {
  function sameHostDone(): FakeHost {
    const h = new FakeHost('h1');
    h.put('/a/web/disk.qcow2', 'original');
    h.put('/b/web/disk.qcow2', 'original');
    h.domains.set('web', {
      state: 'running',
      disks: { vda: '/b/web/disk.qcow2' },
      autostart: false,
      persistent: true,
    });
    return h;
  }

  it('removes the source when unchanged since the copy and used by nobody', async () => {
    const h = sameHostDone();
    await runStep(depsFor({ h1: h }), 'cleanUpSource', ctxBase({ committed: true }));
    expect(h.files.has('/a/web/disk.qcow2')).toBe(false);
    expect(h.files.has('/b/web/disk.qcow2')).toBe(true);
  });

  it('keeps a source that changed after its copy (the VM was started and written in between)', async () => {
    const h = sameHostDone();
    h.files.get('/a/web/disk.qcow2')!.content = 'written later';
    await expect(
      runStep(depsFor({ h1: h }), 'cleanUpSource', ctxBase({ committed: true })),
    ).rejects.toMatchObject({
      reason: 'SourceChangedAfterCopy',
    });
    expect(h.files.get('/a/web/disk.qcow2')?.content).toBe('written later');
  });

  it.each([
    ['a linked clone whose base it is', 'clone-01'],
    ['a VM that shares it read-only', 'reader-02'],
  ])('keeps a source used by %s', async (_what, other) => {
    const h = sameHostDone();
    h.users.set('/a/web/disk.qcow2', new Set([other]));
    await expect(
      runStep(depsFor({ h1: h }), 'cleanUpSource', ctxBase({ committed: true })),
    ).rejects.toMatchObject({
      reason: 'SourceStillInUse',
      message: expect.stringContaining(other),
    });
    expect(h.files.has('/a/web/disk.qcow2')).toBe(true);
    expect(h.calls.filter((c) => c.startsWith('rm'))).toEqual([]);
  });
});

describe('RollingBack deletes only files this migration can prove it created', () => {
  function rolledBackWorld(): { h: FakeHost; targetId: string } {
    const h = new FakeHost('h1');
    h.put('/a/web/disk.qcow2', 'original');
    h.domains.set('web', {
      state: 'running',
      disks: { vda: '/a/web/disk.qcow2' },
      autostart: false,
      persistent: true,
    });
    const targetId = h.put('/b/web/disk.qcow2', 'copy');
    return { h, targetId };
  }

  it('removes the target copy whose identity it recorded before writing it', async () => {
    const { h, targetId } = rolledBackWorld();
    await runStep(
      depsFor({ h1: h }, [{ host: 'h1', path: '/b/web/disk.qcow2', identity: targetId }]),
      'rollBack',
      ctxBase(),
    );
    expect(h.files.has('/b/web/disk.qcow2')).toBe(false);
    expect(h.files.has('/a/web/disk.qcow2')).toBe(true);
  });

  it("never removes a file at the target path that is not the one it created (someone else's, or replaced)", async () => {
    const { h } = rolledBackWorld();
    const out = await runStep(
      depsFor({ h1: h }, [{ host: 'h1', path: '/b/web/disk.qcow2', identity: '9:999' }]),
      'rollBack',
      ctxBase({ lastError: { reason: 'DestinationExists', message: 'appeared' } }),
    );
    expect(h.files.get('/b/web/disk.qcow2')?.content).toBe('copy');
    expect(out.lastError?.message).toContain('left behind: /b/web/disk.qcow2');
  });

  it('never removes a target file another domain runs on, even one it created', async () => {
    const { h, targetId } = rolledBackWorld();
    h.users.set('/b/web/disk.qcow2', new Set(['db-01']));
    await runStep(
      depsFor({ h1: h }, [{ host: 'h1', path: '/b/web/disk.qcow2', identity: targetId }]),
      'rollBack',
      ctxBase(),
    );
    expect(h.files.has('/b/web/disk.qcow2')).toBe(true);
  });

  it('switches the source autostart back on after a cross-host move that switched it off', async () => {
    const h1 = new FakeHost('h1');
    const h2 = new FakeHost('h2');
    h1.put('/a/web/disk.qcow2', 'original');
    h1.domains.set('web', {
      state: 'running',
      disks: { vda: '/a/web/disk.qcow2' },
      autostart: false,
      persistent: true,
    });
    await runStep(
      depsFor({ h1, h2 }),
      'rollBack',
      ctxBase({ toHost: 'h2', sourceAutostart: true, intents: undefined } as Partial<MigrationContext>),
    );
    expect(h1.domains.get('web')?.autostart).toBe(true);
  });
});

describe('Restoring across hosts looks at the source right before the restore', () => {
  it('does not restore on the target when the VM was started on the source meanwhile', async () => {
    const h1 = new FakeHost('h1');
    const h2 = new FakeHost('h2');
    // the prefetch/lookup saw it shut off; then someone started it on the source
    let asked = 0;
    h1.domains.set('web', {
      state: 'shutoff',
      disks: { vda: '/a/web/disk.qcow2' },
      autostart: false,
      persistent: true,
    });
    const deps = depsFor({ h1, h2 });
    const base = deps.driverFor;
    deps.driverFor = (h) => {
      const d = base(h);
      if (h !== 'h1') return d;
      return {
        ...d,
        domainState: async () => (++asked >= 1 ? 'running' : 'shutoff'),
        getDomain: d.getDomain,
      };
    };
    await expect(
      runStep(
        deps,
        'restoreVm',
        ctxBase({ toHost: 'h2', stateFile: '/b/web.state.vmplace-m1', pausedAt: 1 }),
      ),
    ).rejects.toMatchObject({ reason: 'DomainRunningOnSource' });
    expect(h2.calls).not.toContain('restore');
  });
});
