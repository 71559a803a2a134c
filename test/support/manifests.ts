/**
 * Temporary repositories and manifest documents for manifest, status and CLI tests.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tmpDir } from './tmp';

export const REPO_ROOT = path.resolve(__dirname, '../..');
export const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures');

/**
 * A fresh repository holding `files` (relative path -> content) and an empty `manifests/`;
 * removed by `cleanupTmp` (test/support/tmp.ts).
 */
export function makeRepo(files: Record<string, string | Buffer> = {}): string {
  const dir = tmpDir('vmplace-manifests-');
  const repo = path.join(dir, 'repo');
  fs.mkdirSync(path.join(repo, 'manifests'), { recursive: true });
  for (const [rel, content] of Object.entries(files)) {
    const abs = path.join(repo, rel);
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    fs.writeFileSync(abs, content);
  }
  return repo;
}

/** A valid local Host with storage `a` and `b`; `extra` lines are appended under `spec:`. */
export function hostDoc(name = 'lab', extra = ''): string {
  return `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata:
  name: ${name}
spec:
  driver: libvirt
  uri: qemu:///system
  storage:
    - name: a
      path: /var/lib/vmplace/a
    - name: b
      path: /var/lib/vmplace/b
${extra}`;
}

/** A valid VirtualMachine on `host`/`storage`; `extra` lines are appended under `spec:`. */
export function vmDoc(name = 'demo', host = 'lab', storage = 'b', extra = ''): string {
  return `apiVersion: vmplace.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: ${name}
spec:
  host: ${host}
  storage: ${storage}
${extra}`;
}
