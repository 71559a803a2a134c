/**
 * Real temporary git repositories: a bare remote and a "human" clone that pushes to it (under
 * {@link tmpDir}: remove them with `cleanupTmp`).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { VirtualMachineStatus } from '../../src/types';
import { tmpDir } from './tmp';

export const HUMAN = { name: 'Ada Human', email: 'ada@example.com' };
export const BOT = { name: 'vmplace bot', email: 'vmplace@example.com' };

/** Run git as the human; returns trimmed stdout. */
export function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      GIT_AUTHOR_NAME: HUMAN.name,
      GIT_AUTHOR_EMAIL: HUMAN.email,
      GIT_COMMITTER_NAME: HUMAN.name,
      GIT_COMMITTER_EMAIL: HUMAN.email,
    },
  }).trim();
}

export function writeFile(root: string, rel: string, content: string): void {
  const abs = path.join(root, rel);
  fs.mkdirSync(path.dirname(abs), { recursive: true });
  fs.writeFileSync(abs, content);
}

/** Commit `files` as the human and push to origin main; returns the new revision. */
export function humanCommit(clone: string, files: Record<string, string>, message = 'human change'): string {
  for (const [rel, content] of Object.entries(files)) writeFile(clone, rel, content);
  git(clone, 'add', '--all');
  git(clone, 'commit', '--quiet', '--no-gpg-sign', '-m', message);
  git(clone, 'push', '--quiet', 'origin', 'HEAD:refs/heads/main');
  return git(clone, 'rev-parse', 'HEAD');
}

/** A bare remote on `main` with one commit (a manifest) and a human clone of it. */
export function makeRemote(): { root: string; remote: string; human: string; initial: string } {
  const root = tmpDir('vmplace-git-');
  const remote = path.join(root, 'remote.git');
  git(root, 'init', '--quiet', '--bare', '--initial-branch=main', remote);
  const human = path.join(root, 'human');
  git(root, 'init', '--quiet', '--initial-branch=main', human);
  git(human, 'remote', 'add', 'origin', remote);
  const initial = humanCommit(human, { 'manifests/vms.yaml': 'kind: VirtualMachine\n' }, 'initial');
  return { root, remote, human, initial };
}

/** Pull the remote's main into the human clone. */
export function humanPull(clone: string): void {
  git(clone, 'pull', '--quiet', '--ff-only', 'origin', 'main');
}

/** A VM placed on host `lab`, storage `a` (the status file the git tests commit). */
export const vmStatus = (name = 'demo', over: Partial<VirtualMachineStatus> = {}): VirtualMachineStatus => ({
  apiVersion: 'vmplace.dev/v1alpha1',
  kind: 'VirtualMachineStatus',
  metadata: { name },
  observedRevision: 'abc1234',
  placement: {
    host: 'lab',
    memoryBytes: 1073741824,
    disks: [
      {
        target: 'vda',
        path: '/var/lib/vmplace/a/demo-vda.qcow2',
        storage: 'a',
        format: 'qcow2',
        virtualBytes: 10737418240,
        allocatedBytes: 1610612736,
      },
    ],
  },
  phase: 'Placed',
  conditions: [
    {
      type: 'Placed',
      status: 'True',
      reason: 'AtDesiredPlacement',
      message: 'all disks on a',
      lastTransitionTime: '2025-01-15T10:00:00Z',
    },
  ],
  ...over,
});
