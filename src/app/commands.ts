import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { loadDesiredState, type LoadOptions } from '../manifests';
import { DEFAULT_TRUST_FILE, loadTrustPolicy } from '../manifests/trust';
import { unknownDiskOverrides } from '../planner/disk-overrides';
import { writeFileAtomic } from '../atomic-file';
import { formatGithub, formatGitlab, formatJson, type ProblemFormat } from '../manifests/format-ci';
import { markInFlight } from '../planner/in-flight';
import { planHasChanges } from '../planner/plan';
import { renderPlanJson, renderPlanTable } from '../planner/render';
import { renderPlanComment, type CommentContext } from '../planner/render-markdown';
import { measuredThroughput } from '../planner/schedule';
import { storageFill } from '../planner/storage-fill';
import { planMigrations } from '../planner/plan';
import type { RunResult } from '../machine/runner';
import { ApplyRun, type ApplyResult } from '../reconciler/apply';
import { defaultSettings, loadSettings, type Settings } from '../settings';
import { resolveBaseRef, writeStatusAt } from '../status/base-ref';
import { loadActualState, writeStatusFiles } from '../status/files';
import type { ActualState, DesiredState, Plan, PlanFinding, PlannedMigration, Problem } from '../types';
import { composeRuntime } from './compose';

/**
 * What the CLI's commands do, below argument parsing and printing: read the repository, plan,
 * apply through the reconciler built by the composition root.
 */

export { DEFAULT_TRUST_FILE };

/** The trust rules of one command: the operator's file (see trust.ts) and vmplace's own directories. */
export function trustFor(
  trustFile: string | undefined,
  dirs: { stateDir?: string; workdir?: string } = {},
): NonNullable<LoadOptions['trust']> {
  const policy = loadTrustPolicy(trustFile);
  return {
    ...(policy ? { policy } : {}),
    ...(dirs.stateDir ? { stateDir: path.resolve(dirs.stateDir) } : {}),
    ...(dirs.workdir ? { workdir: path.resolve(dirs.workdir) } : {}),
  };
}

/** The repository's `HEAD` commit, if it is a git repository. */
export async function gitRevision(repo: string): Promise<string | undefined> {
  return await new Promise((resolve) => {
    execFile(
      'git',
      ['-C', repo, 'rev-parse', '--verify', '--quiet', 'HEAD'],
      { timeout: 5000 },
      (err, stdout) => resolve(err ? undefined : stdout.trim() || undefined),
    );
  });
}

/**
 * `status/` as it is at the merge base of `ref` and `HEAD`, read like the working tree's, and a
 * warning when the change edits `status/` (a pull request must not decide its own plan's input).
 */
async function loadStatusAtBase(
  root: string,
  ref: string,
): Promise<{ actual: Awaited<ReturnType<typeof loadActualState>>; finding: PlanFinding | undefined }> {
  const b = await resolveBaseRef(root, ref);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'vmplace-base-'));
  try {
    const problems: Problem[] = [];
    await writeStatusAt(root, b.base, tmp, problems);
    const actual = await loadActualState(tmp);
    actual.problems.unshift(...problems);
    const shown =
      b.changed.slice(0, 5).join(', ') + (b.changed.length > 5 ? `, and ${b.changed.length - 5} more` : '');
    const finding: PlanFinding | undefined = b.changed.length
      ? {
          subject: 'status/',
          severity: 'warning',
          reason: 'StatusEditedByChange',
          message: `this change edits status/ (${shown}): the plan uses status from ${ref} (${b.base.slice(0, 12)}), not from this change`,
        }
      : undefined;
    return { actual, finding };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Problem paths as the user can open them: relative to `cwd` (where the command ran), not to the
 * repository, so that `vmplace validate ../fleet` prints `../fleet/manifests/vms.yaml:3:5`, which
 * editors, terminals and CI annotations can follow.
 */
export function fromCwd(root: string, problems: readonly Problem[], cwd = process.cwd()): Problem[] {
  return problems.map((p) => {
    const rel = path.relative(cwd, path.resolve(root, p.file)).split(path.sep).join('/');
    return { ...p, file: rel === '' ? '.' : rel };
  });
}

/** What `validate` and `plan` read from a repository: the same input, so that they agree. */
export interface RepoInput {
  desired: DesiredState;
  actual: ActualState;
  /** undefined when vmplace.yaml is unreadable or invalid (then `problems` says why) */
  settings?: Settings;
  /** errors, paths relative to the repository */
  problems: Problem[];
  /** warnings (skipped files, no status/), paths relative to the repository */
  warnings: Problem[];
  /** a finding for the plan about the base ref (`--base-ref`) */
  baseFinding?: PlanFinding;
}

/**
 * Read the manifests, `status/` (of the merge base with `baseRef`, when given) and `vmplace.yaml`,
 * and check the manifests against the status (per-disk overrides naming no disk of the VM).
 */
export async function readRepo(o: {
  root: string;
  baseRef?: string;
  trustFile?: string;
}): Promise<RepoInput> {
  const desired = await loadDesiredState(o.root, { trust: trustFor(o.trustFile) });
  const { actual, finding: baseFinding } = o.baseRef
    ? await loadStatusAtBase(o.root, o.baseRef)
    : { actual: await loadActualState(o.root), finding: undefined };
  const { settings, problems: settingsProblems } = await loadSettings(o.root);
  const problems = [
    ...desired.problems,
    ...unknownDiskOverrides(desired, actual.state),
    ...actual.problems,
    ...settingsProblems,
  ];
  const warnings = [...(desired.warnings ?? []), ...actual.warnings];
  return {
    desired,
    actual: actual.state,
    ...(settings ? { settings } : {}),
    problems,
    warnings,
    ...(baseFinding ? { baseFinding } : {}),
  };
}

/** `vmplace validate`: problems and warnings of the same input `plan` reads, and a summary. */
export async function validateRepo(o: {
  root: string;
  trustFile?: string;
}): Promise<{ problems: Problem[]; warnings: Problem[]; summary: string }> {
  const r = await readRepo(o);
  const d = r.desired;
  const files = new Set(r.problems.map((p) => p.file)).size;
  const summary = r.problems.length
    ? `${r.problems.length} problem(s) in ${files} file(s)`
    : `valid: ${d.hosts.size} host(s), ${d.clusters.size} cluster(s), ${d.vms.size} VM(s), ${r.actual.vms.size} VM status file(s)`;
  return { problems: r.problems, warnings: r.warnings, summary };
}

/** `vmplace plan`: the plan from the manifests and `status/` (of the merge base with `baseRef`); no plan on a problem. */
export async function planRepo(o: {
  root: string;
  baseRef?: string;
  trustFile?: string;
}): Promise<{ problems: Problem[]; warnings: Problem[]; plan?: Plan; input: RepoInput }> {
  const input = await readRepo(o);
  const { problems, warnings, settings } = input;
  // an unreadable or invalid vmplace.yaml stops here: never plan or apply with defaults
  if (problems.length || !settings) return { problems, warnings, input };
  const planned = planMigrations(input.desired, input.actual, settings.policy, {
    revision: await gitRevision(o.root),
  });
  const plan = markInFlight(planned, input.actual);
  if (input.baseFinding) plan.findings = [input.baseFinding, ...(plan.findings ?? [])];
  return { problems, warnings, plan, input };
}

/** Exit codes: 0 fine, 1 changes (plan --detailed-exitcode) or a failed/blocked migration, 2 bad input or error. */
export const EXIT = { ok: 0, changes: 1, failed: 1, invalid: 2 } as const;

/**
 * The exit code of `vmplace plan`: 1 with `detailedExitcode` when migrations are planned (kubectl
 * diff's meaning, not Terraform's) and with `failOnBlocked` when any is blocked, else 0.
 */
export function planExitCode(plan: Plan, o: { detailedExitcode?: boolean; failOnBlocked?: boolean }): number {
  if (o.failOnBlocked && plan.migrations.some((m) => m.blocked)) return EXIT.failed;
  return o.detailedExitcode && planHasChanges(plan) ? EXIT.changes : EXIT.ok;
}

/** What the plan comment needs besides the plan: limits, measured throughput, storage fill. */
export function commentContext(plan: Plan, input: RepoInput): CommentContext {
  const running = new Map<string, boolean | undefined>();
  for (const [vm, s] of input.actual.vms) running.set(vm, s.placement?.running);
  return {
    limits: (input.settings ?? defaultSettings()).limits,
    measured: measuredThroughput(input.actual.vms.values()),
    running,
    fill: storageFill(plan, input.desired, input.actual),
  };
}

/** The plan as text in one of `plan`'s formats, ending with a newline. */
export function renderPlanAs(format: 'table' | 'json' | 'markdown', plan: Plan, input: RepoInput): string {
  if (format === 'json') return renderPlanJson(plan);
  if (format === 'markdown') return renderPlanComment(plan, commentContext(plan, input));
  return renderPlanTable(plan);
}

/** Problems and warnings in one of `validate`'s machine formats (see format-ci.ts). */
export function renderProblems(
  format: Exclude<ProblemFormat, 'text'>,
  problems: readonly Problem[],
  warnings: readonly Problem[],
): string {
  if (format === 'github')
    return formatGithub(problems, warnings)
      .map((l) => l + '\n')
      .join('');
  return format === 'gitlab' ? formatGitlab(problems, warnings) : formatJson(problems, warnings);
}

/** Write `-o/--output FILE` whole or not at all (a reader never sees half a plan). */
export async function writeOutput(file: string, text: string): Promise<void> {
  await writeFileAtomic(path.resolve(file), text, { mode: 0o644 });
}

/** What `vmplace apply` read from the repository. */
export interface ApplyInput {
  root: string;
  stateDir: string;
  desired: DesiredState;
  previous: ActualState;
  /** undefined when vmplace.yaml is unreadable or invalid (then `problems` says why) */
  settings?: Settings;
  problems: Problem[];
}

export async function loadForApply(o: {
  root: string;
  stateDir: string;
  trustFile?: string;
}): Promise<ApplyInput> {
  const desired = await loadDesiredState(o.root, { trust: trustFor(o.trustFile, { stateDir: o.stateDir }) });
  const previous = await loadActualState(o.root);
  const { settings, problems: settingsProblems } = await loadSettings(o.root);
  const problems = [
    ...desired.problems,
    ...unknownDiskOverrides(desired, previous.state),
    ...previous.problems,
    ...settingsProblems,
  ];
  return { root: o.root, stateDir: o.stateDir, desired, previous: previous.state, settings, problems };
}

/** What `vmplace apply` reports while it runs (progress bars on a terminal). */
export interface ApplyView {
  confirm?(plan: Plan): Promise<boolean>;
  started?(m: PlannedMigration): void;
  progress?(vm: string, done: number, total: number): void;
  finished?(vm: string, result: RunResult): void;
}

/**
 * `vmplace apply`: the daemon's reconciler run once to rest (see ApplyRun), writing `status/`
 * (no commit). `parallel` caps `limits.concurrent` of vmplace.yaml for this run.
 */
export async function applyRepo(
  input: ApplyInput & { settings: Settings },
  o: { logger: Logger; parallel?: number; view?: ApplyView },
): Promise<ApplyResult> {
  const root = input.root;
  const view = o.view;
  const rt = composeRuntime({
    stateDir: input.stateDir,
    logger: o.logger,
    events: {
      onStarted: (m) => view?.started?.(m),
      onTransition: () => run.statusChanged(),
      onFinished: (vm, r) => {
        run.finished(vm, r);
        view?.finished?.(vm, r);
      },
    },
    ...(view?.progress ? { onProgress: (ctx, done, total) => view.progress?.(ctx.vm, done, total) } : {}),
  });
  // (the events above fire only once `run` below runs)
  const run = new ApplyRun(rt.reconciler, {
    writeStatus: async (vms, hosts) => {
      await writeStatusFiles(root, { vms, hosts });
    },
    ...(view?.confirm ? { confirm: (plan: Plan) => view.confirm!(plan) } : {}),
  });
  const limits = input.settings.limits;
  const settings = o.parallel
    ? { ...input.settings, limits: { ...limits, concurrent: Math.min(limits.concurrent, o.parallel) } }
    : input.settings;
  try {
    await rt.store.init();
    rt.useDesired(input.desired);
    return await run.run({
      desired: input.desired,
      previous: input.previous,
      settings,
      revision: await gitRevision(root),
    });
  } finally {
    await rt.close();
  }
}
