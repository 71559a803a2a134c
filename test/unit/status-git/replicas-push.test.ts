/**
 * Several daemon replicas share one fleet: each commits the status files of the VMs it owns to
 * the same branch of the same real bare repository. Pushing at the same moment, every push but
 * one is rejected; the losers fetch, rewrite their own files over the new tip and push again, so
 * no replica's update is lost and none overwrites another's files.
 */
import * as path from 'node:path';
import { writeStatusFiles } from '../../../src/status/files';
import { GitSync } from '../../../src/status/git';
import { BOT, git, makeRemote, vmStatus } from '../../support/git';
import { memoryLogger } from '../../support/logger';
import { cleanupTmp, tmpDir } from '../../support/tmp';

afterAll(cleanupTmp);
jest.setTimeout(60_000);

function replica(remote: string) {
  const { logger } = memoryLogger();
  return new GitSync({
    repo: remote,
    branch: 'main',
    workdir: path.join(tmpDir('vmplace-replica-'), 'work'),
    author: BOT,
    logger,
    maxPushAttempts: 10,
  });
}

describe('status commits of several replicas', () => {
  it('keeps every replica’s files when three push at the same moment, three rounds in a row', async () => {
    const r = makeRemote();
    const owned: Record<string, string[]> = {
      a: ['vm-a1', 'vm-a2'],
      b: ['vm-b1'],
      c: ['vm-c1', 'vm-c2', 'vm-c3'],
    };
    const syncs = Object.fromEntries(Object.keys(owned).map((k) => [k, replica(r.remote)]));
    for (const s of Object.values(syncs)) await s.sync();
    let rejected = 0;
    for (let round = 1; round <= 3; round++) {
      const results = await Promise.all(
        Object.entries(owned).map(([k, vms]) =>
          syncs[k]!.commitStatus(async (wd) => {
            await writeStatusFiles(wd, {
              vms: vms.map((vm) => vmStatus(vm, { observedRevision: `r${round}${k}` })),
            });
          }, `status of replica ${k}, round ${round}`),
        ),
      );
      for (const res of results) {
        expect(res.committed).toBe(true);
        rejected += res.attempts - 1;
      }
      for (const [k, vms] of Object.entries(owned))
        for (const vm of vms)
          expect(git(r.remote, 'show', `main:status/vms/${vm}.yaml`)).toContain(
            `observedRevision: r${round}${k}`,
          );
    }
    // the race was real: pushes were rejected and retried on the new tip
    expect(rejected).toBeGreaterThan(0);
    expect(
      git(r.remote, 'log', '--format=%s', 'main')
        .split('\n')
        .filter((s) => s.startsWith('status of replica')),
    ).toHaveLength(9);
  });
});
