/**
 * `vmplace plan` / `apply` with a hostile `vmplace.yaml`: refused promptly with exit 2 and a
 * clear error, never planned with defaults, never echoing what a link points at.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { main } from '../../../src/cli/main';
import { makeRepo } from '../../support/manifests';
import { cleanupTmp } from '../../support/tmp';

afterAll(cleanupTmp);

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string; ms: number }> {
  let out = '';
  let err = '';
  const t0 = Date.now();
  const code = await main(['node', 'vmplace', ...argv], {
    out: (s) => (out += s),
    err: (s) => (err += s),
    isTTY: false,
  });
  return { code, out, err, ms: Date.now() - t0 };
}

const SECRET = 'TOP-SECRET-CONTENT: [x';

describe('plan and apply with an unreadable vmplace.yaml', () => {
  it.each([
    ['a link to /dev/zero', (repo: string) => fs.symlinkSync('/dev/zero', path.join(repo, 'vmplace.yaml'))],
    [
      'a link to /dev/urandom',
      (repo: string) => fs.symlinkSync('/dev/urandom', path.join(repo, 'vmplace.yaml')),
    ],
    ['a FIFO', (repo: string) => execFileSync('mkfifo', [path.join(repo, 'vmplace.yaml')])],
    [
      'a link to a file outside the repository',
      (repo: string) => {
        const outside = path.join(path.dirname(repo), 'secret.yaml');
        fs.writeFileSync(outside, `${SECRET}\n`);
        fs.symlinkSync(outside, path.join(repo, 'vmplace.yaml'));
      },
    ],
    [
      'a broken link',
      (repo: string) => fs.symlinkSync(path.join(repo, 'nowhere'), path.join(repo, 'vmplace.yaml')),
    ],
    [
      'larger than 256 KiB',
      (repo: string) => fs.writeFileSync(path.join(repo, 'vmplace.yaml'), `# ${'x'.repeat(300_000)}\n`),
    ],
  ])('%s: plan and apply exit 2 at once, saying why, echoing nothing', async (_t, make) => {
    const repo = makeRepo();
    make(repo);
    for (const cmd of [
      ['plan', repo],
      ['apply', '--yes', '--state-dir', path.join(repo, '.state'), repo],
    ]) {
      const r = await run(...cmd);
      expect(r.code).toBe(2);
      expect(r.ms).toBeLessThan(2000);
      // paths relative to the working directory (clickable), not to the repository
      expect(r.err).toContain(`${path.relative(process.cwd(), repo)}/vmplace.yaml:1:1: `);
      expect(r.out + r.err).not.toContain('TOP-SECRET');
      expect(r.out).toBe('');
    }
  });

  it('an invalid vmplace.yaml is an error, not defaults', async () => {
    const repo = makeRepo({ 'vmplace.yaml': 'suspend: true\nlimits: {concurrent: 0}\n' });
    const r = await run('plan', repo);
    expect(r.code).toBe(2);
    expect(r.err).toContain('vmplace.yaml:2:');
    expect(r.out).toBe('');
  });

  it('a missing vmplace.yaml means defaults', async () => {
    const r = await run('plan', makeRepo());
    expect(r.code).toBe(0);
    expect(r.out).toContain('No migrations.');
  });
});
