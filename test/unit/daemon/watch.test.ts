import * as fs from 'node:fs';
import * as path from 'node:path';
import { watchManifests, type ManifestWatcher } from '../../../src/daemon/watch';
import { git, makeRemote, writeFile } from '../../support/git';
import { cleanupTmp, tmpDir } from '../../support/tmp';

afterAll(cleanupTmp);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DEBOUNCE = 300;

/** Wait until `done()` holds, or 10 s (the assertion after it then fails). */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !done(); i++) await sleep(50);
  await sleep(DEBOUNCE + 200); // and a little more, so that a second, wrong call would be seen
}

describe('watchManifests', () => {
  let watcher: ManifestWatcher | undefined;
  afterEach(async () => {
    await watcher?.close();
    watcher = undefined;
  });

  function repo(): string {
    const dir = tmpDir('vmplace-watch-');
    writeFile(dir, 'manifests/vms.yaml', 'a: 1\n');
    writeFile(dir, 'status/vms/demo.yaml', 'x: 1\n');
    return dir;
  }

  it('calls back once for a burst of writes, after the quiet time', async () => {
    const dir = repo();
    let calls = 0;
    watcher = await watchManifests(dir, () => calls++, { debounceMs: DEBOUNCE, gitRefs: false });
    await sleep(100);
    expect(calls).toBe(0); // existing files are not changes

    for (let i = 0; i < 10; i++) {
      writeFile(dir, 'manifests/vms.yaml', `a: ${i}\n`);
      writeFile(dir, `manifests/more/host-${i}.yaml`, 'b: 1\n');
      await sleep(20);
    }
    expect(calls).toBe(0); // still inside the burst
    await until(() => calls >= 1);
    expect(calls).toBe(1);

    fs.rmSync(path.join(dir, 'manifests/more/host-3.yaml'));
    await until(() => calls >= 2);
    expect(calls).toBe(2);
  });

  it('ignores dotfiles and anything outside manifests/', async () => {
    const dir = repo();
    let calls = 0;
    watcher = await watchManifests(dir, () => calls++, { debounceMs: DEBOUNCE, gitRefs: false });
    writeFile(dir, 'manifests/.vms.yaml.swp', 'x');
    writeFile(dir, 'manifests/.hidden/a.yaml', 'x');
    writeFile(dir, 'status/vms/demo.yaml', 'x: 2\n');
    writeFile(dir, 'README.md', 'x');
    await sleep(DEBOUNCE + 700);
    expect(calls).toBe(0);
  });

  it('does not follow a symbolic link out of manifests/ (a change behind it is no change)', async () => {
    const dir = repo();
    const outside = tmpDir('vmplace-watch-outside-');
    writeFile(outside, 'deep/x.yaml', 'a: 1\n');
    fs.symlinkSync(outside, path.join(dir, 'manifests', 'elsewhere'));
    let calls = 0;
    watcher = await watchManifests(dir, () => calls++, { debounceMs: DEBOUNCE, gitRefs: false });
    writeFile(outside, 'deep/x.yaml', 'a: 2\n');
    writeFile(outside, 'new.yaml', 'b: 1\n');
    await sleep(DEBOUNCE + 700);
    expect(calls).toBe(0);
  });

  it('stops calling back once closed, even with a change pending', async () => {
    const dir = repo();
    let calls = 0;
    const w = await watchManifests(dir, () => calls++, { debounceMs: DEBOUNCE, gitRefs: false });
    writeFile(dir, 'manifests/vms.yaml', 'a: 2\n');
    await sleep(50);
    await w.close();
    writeFile(dir, 'manifests/vms.yaml', 'a: 3\n');
    await sleep(DEBOUNCE + 700);
    expect(calls).toBe(0);
  });

  it('calls back on a commit in a local working copy', async () => {
    const { human } = makeRemote();
    let calls = 0;
    watcher = await watchManifests(human, () => calls++, { debounceMs: DEBOUNCE });
    // edit, wait for that pass, then commit: the commit alone must trigger another
    // (polled, not a fixed sleep: on a busy CI machine inotify events can take seconds)
    writeFile(human, 'manifests/vms.yaml', 'kind: VirtualMachine # edited\n');
    await until(() => calls >= 1);
    expect(calls).toBe(1);
    git(human, 'commit', '--quiet', '--no-gpg-sign', '-am', 'edit');
    await until(() => calls >= 2);
    expect(calls).toBe(2);
  });

  it('refuses a repository without manifests/', async () => {
    await expect(watchManifests(tmpDir('vmplace-watch-'), () => undefined)).rejects.toMatchObject({
      reason: 'ManifestsDirNotFound',
    });
  });
});
