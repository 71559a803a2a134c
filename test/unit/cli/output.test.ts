/**
 * Output bounds and hygiene (issue 9 item 12): problems are capped per file and in all with a
 * summary, exit codes unchanged; text from status/manifests reaches a terminal or a PR comment
 * without control, bidi or zero-width characters, and without live `@mentions`. And the
 * `--trust-file` flag of validate (item 9).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { capProblems, formatProblem, formatProblemsCapped } from '../../../src/manifests/format';
import { escapeMarkdown, renderPlanMarkdown, renderPlanTable } from '../../../src/planner/render';
import type { Plan, Problem } from '../../../src/types';
import { hostDoc, makeRepo } from '../../support/manifests';
import { runCli } from '../../support/cli';
import { cleanupTmp } from '../../support/tmp';

afterAll(cleanupTmp);

const run = runCli;

describe('problems are capped', () => {
  it('one file with 5,000 bad documents prints 100 problems and a summary; exit code 2', async () => {
    const bad = (i: number) =>
      `apiVersion: vmplace.dev/v1alpha1\nkind: VirtualMachine\nmetadata: {name: "Bad_${i}"}\nspec: {host: lab, storage: a}\n`;
    const docs = Array.from({ length: 5000 }, (_, i) => bad(i)).join('---\n');
    const repo = makeRepo({ 'manifests/flood.yaml': docs, 'manifests/ok.yaml': hostDoc('lab') });
    const r = await run('validate', repo);
    expect(r.code).toBe(2);
    const lines = r.err.trimEnd().split('\n');
    // paths are relative to the working directory (clickable), not to the repository
    const flood = `${path.relative(process.cwd(), repo)}/manifests/flood.yaml`;
    expect(lines.filter((l) => l.startsWith(`${flood}:`) && / VirtualMachine\//.test(l))).toHaveLength(100);
    expect(lines).toContain(`${flood}: ... 4900 more problem(s) in this file not shown`);
    expect(lines).toContain('... 4900 more problem(s) not shown (5000 in all)');
    expect(lines.at(-1)).toBe('5000 problem(s) in 1 file(s)');
    expect(lines.length).toBeLessThan(110);
  });

  it('at most 1,000 in all across files', () => {
    const problems: Problem[] = [];
    for (let f = 0; f < 30; f++)
      for (let i = 0; i < 50; i++) problems.push({ file: `m/${f}.yaml`, line: i + 1, col: 1, message: 'x' });
    const { shown, notes } = capProblems(problems);
    expect(shown).toHaveLength(1000);
    expect(notes).toEqual(['... 500 more problem(s) not shown (1500 in all)']);
    expect(formatProblemsCapped(problems.slice(0, 3))).toEqual(problems.slice(0, 3).map(formatProblem));
  });
});

describe('text from status and manifests is made safe', () => {
  const hostile = 'fine\u202Egnp.exe\u2066 @octocat x\u200By\u0007\u001b[31m';
  const plan = (): Plan => ({
    revision: 'abc',
    migrations: [
      {
        vm: 'web-01',
        kind: 'same-host',
        strategy: 'quick',
        from: { host: 'hv-a' },
        to: { host: 'hv-a' },
        disks: [{ target: 'vda', from: `a${hostile}`, to: 'b', bytes: 1 }],
        stateOnly: false,
        blocked: true,
        findings: [{ severity: 'error', reason: 'StatusDisagrees', message: `lastError: ${hostile}` }],
        order: 1,
      },
    ],
    unchanged: [],
    unknown: [],
    suspended: [],
  });
  // eslint-disable-next-line no-control-regex
  const unsafe = /[\u0000-\u0008\u000b-\u001f\u007f\u200b-\u200f\u202a-\u202e\u2066-\u2069]/;

  it('the terminal table has no control, bidi or zero-width characters', () => {
    const t = renderPlanTable(plan());
    expect(t).not.toMatch(unsafe);
    expect(t).toContain('fine gnp.exe');
  });

  it('the markdown comment neither reorders text nor mentions anyone', () => {
    const md = renderPlanMarkdown(plan());
    expect(md).not.toMatch(unsafe);
    expect(md).not.toMatch(/@octocat/);
    expect(md).toContain('@&#8203;octocat');
    expect(escapeMarkdown('mail me@example.com, @a-team and @@x')).toBe(
      'mail me@&#8203;example.com, @&#8203;a-team and @@&#8203;x',
    );
  });

  it('problem lines replace bidi and zero-width characters too', () => {
    const line = formatProblem({ file: 'manifests/\u202Ex.yaml', line: 1, col: 1, message: hostile });
    expect(line).not.toMatch(unsafe);
  });
});

describe('validate --trust-file', () => {
  it('reports manifests outside the trust file as FILE:LINE:COL problems, exit 2', async () => {
    const repo = makeRepo({ 'manifests/h.yaml': hostDoc('lab') });
    const trust = path.join(path.dirname(repo), 'trust.yaml');
    fs.writeFileSync(trust, 'apiVersion: vmplace.dev/v1alpha1\nkind: TrustPolicy\nstoragePaths: [/srv/vm]\n');
    const r = await run('validate', '--trust-file', trust, repo);
    expect(r.code).toBe(2);
    expect(r.err).toContain(
      `${path.relative(process.cwd(), repo)}/manifests/h.yaml:10:13: Host/lab: spec.storage[0].path: "/var/lib/vmplace/a" is outside the storage paths the operator allows (trust file ${trust}): /srv/vm`,
    );
    fs.writeFileSync(
      trust,
      'apiVersion: vmplace.dev/v1alpha1\nkind: TrustPolicy\nstoragePaths: [/var/lib/vmplace]\n',
    );
    expect((await run('validate', '--trust-file', trust, repo)).code).toBe(0);
  });

  it('an unreadable or invalid trust file is an error, not an open door', async () => {
    const repo = makeRepo({ 'manifests/h.yaml': hostDoc('lab') });
    const r = await run('validate', '--trust-file', path.join(repo, 'nope.yaml'), repo);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^vmplace: trust file .*nope\.yaml: ENOENT/);
  });
});
