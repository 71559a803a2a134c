/**
 * Temporary repositories for manifest and status tests.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '../../..');
export const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures');

const made: string[] = [];

/** A fresh directory holding `files` (relative path -> content); removed by {@link cleanupRepos}. */
export function makeRepo(files: Record<string, string | Buffer> = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-manifests-'));
  made.push(dir);
  const repo = path.join(dir, 'repo');
  fs.mkdirSync(path.join(repo, 'manifests'), { recursive: true });
  for (const [rel, content] of Object.entries(files)) {
    const abs = path.join(repo, rel);
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    fs.writeFileSync(abs, content);
  }
  return repo;
}

export function cleanupRepos(): void {
  for (const d of made.splice(0)) fs.rmSync(d, { recursive: true, force: true });
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
