import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeFileAtomic, writeFileAtomicSync } from '../../src/atomic-file';
import { MigrationStore } from '../../src/machine/store';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-atomic-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const write = {
  async: (file: string, data: string, opts?: { mode?: number }) => writeFileAtomic(file, data, opts),
  // thrown inside the executor, so a failure is a rejection like the async form's
  sync: (file: string, data: string, opts?: { mode?: number }) =>
    new Promise<void>((resolve) => {
      writeFileAtomicSync(file, data, opts);
      resolve();
    }),
};

describe.each(Object.entries(write))('writeFileAtomic (%s)', (_form, writeFile) => {
  it('creates and replaces a file and leaves no temporary file', async () => {
    const file = path.join(dir, 'a.json');
    await writeFile(file, 'one\n');
    await writeFile(file, 'two\n');
    expect(fs.readFileSync(file, 'utf8')).toBe('two\n');
    expect(fs.readdirSync(dir)).toEqual(['a.json']);
  });

  it('new files are 0600 unless a mode is given', async () => {
    await writeFile(path.join(dir, 'private'), 'x');
    await writeFile(path.join(dir, 'shared'), 'x', { mode: 0o644 });
    expect(fs.statSync(path.join(dir, 'private')).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.join(dir, 'shared')).mode & 0o777).toBe(0o644);
  });

  it('replaces a symbolic link at the file itself, never writing its target', async () => {
    const outside = path.join(dir, 'outside');
    fs.writeFileSync(outside, 'keep\n');
    const file = path.join(dir, 'status.yaml');
    fs.symlinkSync(outside, file);
    await writeFile(file, 'new\n');
    expect(fs.lstatSync(file).isFile()).toBe(true);
    expect(fs.readFileSync(file, 'utf8')).toBe('new\n');
    expect(fs.readFileSync(outside, 'utf8')).toBe('keep\n');
  });

  it('a failed rename leaves the old content and no temporary file', async () => {
    const target = path.join(dir, 'is-a-dir');
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, 'inside'), 'old');
    await expect(writeFile(target, 'new')).rejects.toMatchObject({
      code: expect.stringMatching(/EISDIR|ENOTEMPTY|EEXIST/),
    });
    expect(fs.readdirSync(dir)).toEqual(['is-a-dir']);
    expect(fs.readFileSync(path.join(target, 'inside'), 'utf8')).toBe('old');
  });
});

describe('MigrationStore writes through writeFileAtomic', () => {
  it('a save whose rename fails leaves no temporary file in migrations/', async () => {
    const store = new MigrationStore(dir);
    await store.init();
    // a directory where the record belongs: the rename onto it fails
    fs.mkdirSync(path.join(store.activeDir, 'web.m1.json'));
    fs.writeFileSync(path.join(store.activeDir, 'web.m1.json', 'x'), '');
    await expect(store.save('web', 'm1', { value: 'Preflight' })).rejects.toThrow();
    expect(fs.readdirSync(store.activeDir)).toEqual(['web.m1.json']);
  });

  it('records are 0600 and round-trip', async () => {
    const store = new MigrationStore(dir);
    await store.init();
    await store.save('web', 'm1', { value: 'Preflight' });
    await store.markIntent('web', 'm1', 'restore');
    const file = path.join(store.activeDir, 'web.m1.json');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect((await store.listActive()).records.map((r) => r.snapshot)).toEqual([{ value: 'Preflight' }]);
    expect(await store.hasIntent('web', 'm1', 'restore')).toBe(true);
  });
});
