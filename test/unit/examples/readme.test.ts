/**
 * What a new user pastes from the README (issue 11): the manifest example validates as it is,
 * and the offline quick start runs commands that exist after `npm ci`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { main } from '../../../src/cli/main';
import { cleanupTmp, tmpDir } from '../../support/tmp';

const README = fs.readFileSync(path.resolve(__dirname, '../../../README.md'), 'utf8');

afterAll(cleanupTmp);

/** The first fenced block of `lang` after `heading`. */
function blockAfter(heading: string, lang: string): string {
  const from = README.indexOf(heading);
  expect(from).toBeGreaterThanOrEqual(0);
  const m = new RegExp('```' + lang + '\\n([\\s\\S]*?)```').exec(README.slice(from));
  return m![1]!;
}

it("the README's manifest example validates as pasted", async () => {
  const repo = tmpDir();
  fs.mkdirSync(path.join(repo, 'manifests'));
  fs.writeFileSync(path.join(repo, 'manifests/example.yaml'), blockAfter('## Manifests', 'yaml'));
  let out = '';
  let err = '';
  const code = await main(['node', 'vmplace', 'validate', repo], {
    out: (s) => (out += s),
    err: (s) => (err += s),
    isTTY: false,
  });
  // a fresh repository has no status/ yet: that is a warning, never an error
  expect(err.split('\n').filter((l) => l !== '' && !/: warning: /.test(l))).toEqual([]);
  expect(out).toBe('valid: 1 host(s), 1 cluster(s), 1 VM(s), 0 VM status file(s)\n');
  expect(code).toBe(0);
});

it("the README's Hyper-V example validates as pasted (issue 15)", async () => {
  const repo = tmpDir();
  fs.mkdirSync(path.join(repo, 'manifests'));
  fs.writeFileSync(path.join(repo, 'manifests/example.yaml'), blockAfter('### Hyper-V hosts', 'yaml'));
  let out = '';
  let err = '';
  const code = await main(['node', 'vmplace', 'validate', repo], {
    out: (s) => (out += s),
    err: (s) => (err += s),
    isTTY: false,
  });
  expect(err.split('\n').filter((l) => l !== '' && !/: warning: /.test(l))).toEqual([]);
  expect(out).toBe('valid: 1 host(s), 1 cluster(s), 0 VM(s), 0 VM status file(s)\n');
  expect(code).toBe(0);
});

it('the offline quick start runs vmplace through npx (npm ci links no own bin)', () => {
  const block = blockAfter('Without root and without a lab', 'sh');
  expect(block).not.toContain('node_modules/.bin/vmplace');
  expect(block).toMatch(/^npx vmplace validate /m);
});
