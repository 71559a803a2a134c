/**
 * The example CI files in `examples/ci/` (issue 11, "Ready-to-use CI"): each is accepted by its
 * platform's own checker as shipped on npm (GitHub's workflow parser; gitlab-ci-local, which checks
 * a pipeline against GitLab's `ci.json` schema bundled in it), plans against the base branch's
 * status, and the GitLab note script is run for real (bash, curl) against a stand-in GitLab API:
 * one note, created once and edited afterwards, the token in no log line.
 */
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { parse } from 'yaml';
import { cleanupTmp, tmpDir } from '../../support/tmp';

const ROOT = path.resolve(__dirname, '../../..');
const GITHUB = path.join(ROOT, 'examples/ci/github/vmplace.yml');
const GITLAB = path.join(ROOT, 'examples/ci/gitlab/.gitlab-ci.yml');

afterAll(cleanupTmp);

const load = (file: string): Record<string, unknown> =>
  parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;

/** `text` with `from` replaced once by `to`; throws when `from` is not there (a stale negative case). */
function edit(text: string, from: RegExp, to: string): string {
  if (!from.test(text)) throw new Error(`${String(from)} not in the example`);
  return text.replace(from, to);
}

/** The findings of GitHub's workflow parser (@actions/workflow-parser, an ES module: in a child). */
function githubWorkflowErrors(text: string): string[] {
  const r = spawnSync(
    process.execPath,
    [path.join(ROOT, 'test/support/github-workflow-parse.js'), 'vmplace.yml'],
    { input: text, encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`github-workflow-parse failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { errors: string[] }).errors;
}

/**
 * gitlab-ci-local run on a copy of a pipeline: it checks the file against GitLab's `ci.json` schema
 * (bundled in the package) before anything else, then lists the jobs of a merge request pipeline
 * as JSON. No Docker, no network: `--list-json` runs no job; no git repository: it falls back to
 * made-up commit data. Pinned to 4.73.0: 4.74 and later need Node 22 (`Set.prototype.union`).
 */
function gitlabCiLocal(text: string): { code: number | null; stdout: string; output: string } {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, '.gitlab-ci.yml'), text);
  const r = spawnSync(
    process.execPath,
    [
      path.join(ROOT, 'node_modules/gitlab-ci-local/dist/index.js'),
      '--home',
      path.join(dir, 'home'),
      '--list-json',
      '--no-color',
      '--variable',
      'CI_PIPELINE_SOURCE=merge_request_event',
      '--ignore-predefined-vars',
      'CI_PIPELINE_SOURCE',
    ],
    { cwd: dir, encoding: 'utf8' },
  );
  return { code: r.status, stdout: r.stdout, output: r.stdout + r.stderr };
}

interface Step {
  name?: string;
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
}

describe('examples/ci/github/vmplace.yml', () => {
  const doc = load(GITHUB);
  const steps = (doc.jobs as { vmplace: { steps: Step[] } }).vmplace.steps;

  it("is accepted by GitHub's workflow parser (schema, expressions)", () => {
    expect(githubWorkflowErrors(fs.readFileSync(GITHUB, 'utf8'))).toEqual([]);
  });

  it('the parser check is not vacuous: a misspelt key and a wrong type are reported', () => {
    const text = fs.readFileSync(GITHUB, 'utf8');
    expect(githubWorkflowErrors(edit(text, /^ {4}runs-on:/m, '    run-on:'))).toEqual(
      expect.arrayContaining([expect.stringContaining("Unexpected value 'run-on'")]),
    );
    expect(
      githubWorkflowErrors(edit(text, /^ {4}timeout-minutes: 10$/m, '    timeout-minutes: [10]')),
    ).toEqual([expect.stringContaining('A sequence was not expected')]);
  });

  it('validates with annotations, plans against the base branch, one sticky comment', () => {
    const runs = steps.map((s) => s.run ?? '').join('\n');
    expect(runs).toMatch(/vmplace validate \. --format github/);
    expect(runs).toMatch(/vmplace plan \. --format markdown --base-ref "origin\/\$BASE_REF"/);
    const checkout = steps.find((s) => s.uses?.startsWith('actions/checkout@'));
    expect(checkout?.with).toMatchObject({ 'fetch-depth': 0, 'persist-credentials': false });
    const comment = steps.find((s) => s.uses?.startsWith('marocchino/sticky-pull-request-comment@'));
    expect(comment?.with).toMatchObject({ header: 'vmplace-plan', path: 'plan.md' });
    expect(doc.on).toHaveProperty('pull_request');
  });

  it('no expression is pasted into a script (values come through env)', () => {
    for (const s of steps) expect(s.run ?? '').not.toContain('${{');
  });
});

describe('examples/ci/gitlab/.gitlab-ci.yml', () => {
  const doc = load(GITLAB);

  it("is accepted by gitlab-ci-local (GitLab's ci.json schema): both jobs run on a merge request", () => {
    const r = gitlabCiLocal(fs.readFileSync(GITLAB, 'utf8'));
    expect({ code: r.code, output: r.code === 0 ? '' : r.output }).toEqual({ code: 0, output: '' });
    expect(JSON.parse(r.stdout)).toEqual([
      expect.objectContaining({ name: 'validate', stage: 'validate', when: 'on_success' }),
      expect.objectContaining({ name: 'plan', stage: 'plan', when: 'on_success', needs: [] }),
    ]);
  });

  it('the schema check is not vacuous: a misspelt job key is refused', () => {
    const r = gitlabCiLocal(
      edit(fs.readFileSync(GITLAB, 'utf8'), /^ {2}stage: plan$/m, '  stage: plan\n  scripts: [true]'),
    );
    expect(r.code).not.toBe(0);
    expect(r.output).toContain("'scripts' property is not expected to be here at plan");
  });

  it('validates as a Code Quality report and plans against the target branch', () => {
    const validateJob = doc.validate as { script: string[]; artifacts: { reports: { codequality: string } } };
    expect(validateJob.script.join('\n')).toMatch(/vmplace validate \. --format gitlab > (\S+)/);
    expect(validateJob.artifacts.reports.codequality).toBe('gl-code-quality-report.json');
    const plan = (doc.plan as { script: string[] }).script.join('\n');
    expect(plan).toContain(
      'vmplace plan . --format markdown --base-ref "origin/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME"',
    );
  });

  it('the token appears in one place only: a shell builtin writing the header file', () => {
    const text = fs.readFileSync(GITLAB, 'utf8');
    const uses = text.split('\n').filter((l) => l.includes('$VMPLACE_NOTE_TOKEN'));
    expect(uses).toEqual([`        printf 'PRIVATE-TOKEN: %s\\n' "$VMPLACE_NOTE_TOKEN" > "$header"`]);
  });

  describe('the note script, run with bash and curl against a stand-in GitLab API', () => {
    const TOKEN = 'glpat-secret-0123456789';
    const BOT = 7;
    interface Note {
      id: number;
      body: string;
      author: { id: number };
    }
    let notes: Note[];
    let seenTokens: (string | undefined)[];
    let server: http.Server;
    let api: string;

    beforeAll(async () => {
      server = http.createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          seenTokens.push(req.headers['private-token'] as string | undefined);
          const url = new URL(req.url ?? '/', 'http://x');
          const send = (code: number, body: unknown) => {
            res.writeHead(code, { 'Content-Type': 'application/json' });
            res.end(JSON.stringify(body));
          };
          if (req.headers['private-token'] !== TOKEN) return send(401, { message: '401 Unauthorized' });
          const notesPath = '/api/v4/projects/42/merge_requests/5/notes';
          if (req.method === 'GET' && url.pathname === '/api/v4/user') return send(200, { id: BOT });
          if (req.method === 'GET' && url.pathname === notesPath) return send(200, notes);
          const body = chunks.length
            ? (JSON.parse(Buffer.concat(chunks).toString()) as { body: string })
            : null;
          if (req.method === 'POST' && url.pathname === notesPath) {
            const note = { id: 100 + notes.length, body: body!.body, author: { id: BOT } };
            notes.push(note);
            return send(201, note);
          }
          const m = new RegExp(`^${notesPath}/(\\d+)$`).exec(url.pathname);
          const note = m && notes.find((n) => n.id === Number(m[1]));
          if (req.method === 'PUT' && note) {
            if (note.author.id !== BOT) return send(403, { message: '403 Forbidden' });
            note.body = body!.body;
            return send(200, note);
          }
          send(404, { message: '404 Not Found' });
        });
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      api = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v4`;
    });
    afterAll(() => new Promise<void>((r) => server.close(() => r())));
    beforeEach(() => {
      // someone else's note that starts with the marker: never edited
      notes = [{ id: 1, body: '<!-- vmplace-plan -->\nfake', author: { id: 3 } }];
      seenTokens = [];
    });

    /** The plan job's script lines after the git fetch, as GitLab runs them (bash, errexit). */
    function runPlanJob(planText: string, planCode: number, token: string | undefined) {
      const dir = tmpDir();
      const bin = path.join(dir, 'bin');
      fs.mkdirSync(bin);
      // a stand-in vmplace: the plan comes from here, the real renderer has its own tests
      fs.writeFileSync(
        path.join(bin, 'vmplace'),
        `#!/bin/sh\ncat "${path.join(dir, 'plan.txt')}"\nexit ${planCode}\n`,
        { mode: 0o755 },
      );
      fs.writeFileSync(path.join(dir, 'plan.txt'), planText);
      const lines = (doc.plan as { script: string[] }).script.filter((l) => !l.startsWith('git fetch'));
      const script = ['set -eo pipefail', ...lines].join('\n');
      return new Promise<{ code: number; log: string }>((resolve) => {
        execFile(
          'bash',
          ['-c', script],
          {
            cwd: dir,
            env: {
              PATH: `${bin}:${process.env.PATH}`,
              CI_API_V4_URL: api,
              CI_PROJECT_ID: '42',
              CI_MERGE_REQUEST_IID: '5',
              CI_MERGE_REQUEST_TARGET_BRANCH_NAME: 'main',
              ...(token ? { VMPLACE_NOTE_TOKEN: token } : {}),
            },
          },
          (err, stdout, stderr) =>
            resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, log: stdout + stderr }),
        );
      });
    }

    it('creates one note, then edits it on the next push; the token is in no log line', async () => {
      const first = await runPlanJob('## vmplace plan\n\n1 migration\n', 0, TOKEN);
      expect(first.code).toBe(0);
      expect(first.log).toContain('plan note created');
      const second = await runPlanJob('## vmplace plan\n\nnothing to do\n', 0, TOKEN);
      expect(second.code).toBe(0);
      expect(second.log).toContain('plan note updated');
      const mine = notes.filter((n) => n.author.id === BOT);
      expect(mine).toHaveLength(1);
      expect(mine[0]!.body).toBe('<!-- vmplace-plan -->\n## vmplace plan\n\nnothing to do\n');
      expect(notes[0]!.body).toBe('<!-- vmplace-plan -->\nfake');
      expect(seenTokens.every((t) => t === TOKEN)).toBe(true);
      expect(first.log + second.log).not.toContain(TOKEN);
    });

    it('a plan that fails still writes the note, then fails the job with its exit code', async () => {
      const r = await runPlanJob('', 2, TOKEN);
      expect(r.code).toBe(2);
      expect(notes.find((n) => n.author.id === BOT)?.body).toContain('vmplace plan failed');
    });

    it('without the token (a fork): no API call, the job still plans', async () => {
      const r = await runPlanJob('## plan\n', 0, undefined);
      expect(r.code).toBe(0);
      expect(r.log).toContain('VMPLACE_NOTE_TOKEN is not set');
      expect(seenTokens).toEqual([]);
    });
  });
});

describe('examples/ci/CODEOWNERS', () => {
  it('gives status/ to the bot', () => {
    const rules = fs
      .readFileSync(path.join(ROOT, 'examples/ci/CODEOWNERS'), 'utf8')
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('#'))
      .map((l) => l.trim().split(/\s+/));
    // the last matching rule wins: the status/ rule comes after the catch-all
    expect(rules.at(-1)).toEqual(['/status/', '@vmplace-bot']);
  });
});
