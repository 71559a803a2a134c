import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline/promises';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import {
  applyRepo,
  EXIT,
  fromCwd,
  loadForApply,
  planExitCode,
  planRepo,
  renderPlanAs,
  renderProblems,
  validateRepo,
  writeOutput,
} from '../app/commands';
import { fetchFleet, readFleet, watchStatusFiles, type Fleet } from '../app/fleet';
import { parseDuration } from '../duration';
import { createLogger } from '../log';
import type { ProblemFormat } from '../manifests/format-ci';
import { renderPlanTable } from '../planner/render';
import { safeText } from '../text';
import { renderFleetTable } from './fleet-table';
import { addDaemonCommand } from './daemon-command';
import { addImportCommand } from './import-command';
import { defaultIo, type Io, printProblems, printWarnings, TRUST_FILE_HELP } from './io';
import { ProgressView } from './progress';

export { EXIT };

function parsePositiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 1000)
    throw new InvalidArgumentError('expected a whole number from 1 to 1000');
  return n;
}

function packageVersion(): string {
  const file = path.resolve(__dirname, '../../package.json');
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
}

/** Show the plan and ask on the terminal. */
async function confirmPlan(io: Io, table: string): Promise<boolean> {
  io.out(table + '\n');
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
  const answer = await rl.question('Run these migrations? [y/N] ');
  rl.close();
  return /^y(es)?$/i.test(answer.trim());
}

/** Build the program. `io` and `exit` are injectable for tests. */
export function buildProgram(io: Io = defaultIo, setExit: (code: number) => void = () => undefined): Command {
  const program = new Command('vmplace')
    .description("Move virtual machines' storage by pull request")
    .version(packageVersion())
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .showHelpAfterError();

  program
    .command('validate')
    .description(
      'check manifests, status/ and vmplace.yaml (what plan reads) against the schemas and each other; print every problem as FILE:LINE:COL',
    )
    .argument('[repo]', 'the GitOps repository', '.')
    .addOption(
      new Option(
        '--format <format>',
        'text (FILE:LINE:COL), github (workflow commands: annotations), gitlab (Code Quality report), json',
      )
        .choices(['text', 'github', 'gitlab', 'json'])
        .default('text'),
    )
    .option('--trust-file <file>', TRUST_FILE_HELP)
    .action(async (repo: string, opts: { format: ProblemFormat; trustFile?: string }) => {
      const root = path.resolve(repo);
      const r = await validateRepo({ root, ...(opts.trustFile ? { trustFile: opts.trustFile } : {}) });
      const problems = fromCwd(root, r.problems);
      const warnings = fromCwd(root, r.warnings);
      if (opts.format === 'text') {
        printProblems(io, problems);
        printWarnings(io, warnings);
      } else io.out(renderProblems(opts.format, problems, warnings));
      if (problems.length) io.err(`${r.summary}\n`);
      else io.out(opts.format === 'text' ? `${r.summary}\n` : '');
      setExit(problems.length ? EXIT.invalid : EXIT.ok);
    });

  program
    .command('plan')
    .description('compare manifests with status/ (offline) and print the migrations needed')
    .argument('[repo]', 'the GitOps repository', '.')
    .addOption(
      new Option('--format <format>', 'output format')
        .choices(['table', 'json', 'markdown'])
        .default('table'),
    )
    .option('-o, --output <file>', 'write the plan to FILE instead of standard output')
    .option(
      '--detailed-exitcode',
      "exit 0 when nothing changes, 1 when migrations are planned (blocked ones too), 2 on error (kubectl diff's meaning; Terraform's flag of this name uses 2 for changes and 1 for errors)",
    )
    .option('--fail-on-blocked', 'exit 1 when any planned migration is blocked (a pull request check fails)')
    .option(
      '--base-ref <ref>',
      "plan against status/ at the merge base with REF (a pull request's base branch), and warn when the change edits status/",
    )
    .option('--trust-file <file>', TRUST_FILE_HELP)
    .action(
      async (
        repo: string,
        opts: {
          format: 'table' | 'json' | 'markdown';
          output?: string;
          detailedExitcode?: boolean;
          failOnBlocked?: boolean;
          baseRef?: string;
          trustFile?: string;
        },
      ) => {
        const root = path.resolve(repo);
        const { problems, warnings, plan, input } = await planRepo({
          root,
          ...(opts.baseRef ? { baseRef: opts.baseRef } : {}),
          ...(opts.trustFile ? { trustFile: opts.trustFile } : {}),
        });
        printProblems(io, fromCwd(root, problems));
        printWarnings(io, fromCwd(root, warnings));
        if (!plan) return setExit(EXIT.invalid);
        const text = renderPlanAs(opts.format, plan, input);
        if (opts.output) await writeOutput(opts.output, text);
        else io.out(text);
        setExit(planExitCode(plan, opts));
      },
    );

  program
    .command('status')
    .description(
      'the fleet as a table (VM, host, storage, phase, step, progress, pause) from status/, or live from a daemon',
    )
    .argument('[repo]', 'the GitOps repository', '.')
    .option('-w, --watch', 'render again on every change (status/ files; a daemon: every --interval)')
    .option('--daemon <url>', "a running daemon's HTTP address (its --listen), e.g. http://127.0.0.1:9464")
    .option('--interval <duration>', 'with --daemon --watch: how often to ask (500ms, 2s)', '2s')
    .action(async (repo: string, opts: { watch?: boolean; daemon?: string; interval: string }) => {
      const root = path.resolve(repo);
      const read = (): Promise<Fleet> => (opts.daemon ? fetchFleet(opts.daemon) : readFleet(root));
      const show = (fleet: Fleet, again: boolean): number => {
        if (again) io.out(io.isTTY ? '\x1b[H\x1b[2J' : '\n');
        printProblems(io, fleet.problems);
        if (fleet.noStatusDir) io.err(`no ${path.join(repo, 'status')}/: nothing observed yet\n`);
        const table = renderFleetTable(fleet.vms);
        if (table) io.out(table);
        else if (!fleet.noStatusDir) io.err('no VMs in status\n');
        return fleet.problems.length ? EXIT.invalid : EXIT.ok;
      };
      setExit(show(await read(), false));
      if (!opts.watch) return;
      const intervalMs = parseDuration(opts.interval);
      let busy = Promise.resolve();
      // one read at a time, in order; a failed read is said and the watch goes on
      const refresh = () => {
        busy = busy.then(async () => {
          try {
            setExit(show(await read(), true));
          } catch (err) {
            io.err(`vmplace status: ${safeText((err as Error).message)}\n`);
          }
        });
      };
      const watcher = opts.daemon ? undefined : await watchStatusFiles(root, refresh);
      const timer = opts.daemon ? setInterval(refresh, intervalMs) : undefined;
      try {
        await (io.until ??
          new Promise<void>((resolve) => {
            process.once('SIGINT', () => resolve());
            process.once('SIGTERM', () => resolve());
          }));
      } finally {
        if (timer) clearInterval(timer);
        await watcher?.close();
        await busy;
      }
    });

  program
    .command('apply')
    .description(
      "the daemon's reconciler run to rest: observe, plan, run what suspend, windows and limits allow, write status/ (no git commit)",
    )
    .argument('[repo]', 'the GitOps repository', '.')
    .option('-y, --yes', 'do not ask before migrating')
    .option(
      '--state-dir <dir>',
      'where migration state is kept (resumed from here after a crash)',
      '/var/lib/vmplace',
    )
    .addOption(
      new Option('--log-format <format>', 'log format on stderr')
        .choices(['json', 'pretty'])
        .default('pretty'),
    )
    .option(
      '--parallel <n>',
      "at most this many migrations at once (and vmplace.yaml's limits)",
      parsePositiveInt,
    )
    .option('--trust-file <file>', TRUST_FILE_HELP)
    .action(
      async (
        repo: string,
        opts: {
          yes?: boolean;
          stateDir: string;
          logFormat: 'json' | 'pretty';
          parallel?: number;
          trustFile?: string;
        },
      ) => {
        const logger = createLogger({ format: opts.logFormat });
        const input = await loadForApply({
          root: path.resolve(repo),
          stateDir: path.resolve(opts.stateDir),
          ...(opts.trustFile ? { trustFile: opts.trustFile } : {}),
        });
        printProblems(io, fromCwd(input.root, input.problems));
        // an unreadable or invalid vmplace.yaml stops here: never plan or apply with defaults
        if (input.problems.length || !input.settings) return setExit(EXIT.invalid);
        if (!opts.yes && !io.isTTY) {
          io.err('vmplace apply: not a terminal; pass --yes to migrate without asking\n');
          return setExit(EXIT.invalid);
        }
        const progress = io.isTTY && opts.logFormat === 'pretty' ? new ProgressView() : undefined;
        try {
          const result = await applyRepo(
            { ...input, settings: input.settings },
            {
              logger,
              ...(opts.parallel ? { parallel: opts.parallel } : {}),
              view: {
                ...(opts.yes ? {} : { confirm: (plan) => confirmPlan(io, renderPlanTable(plan)) }),
                started: (m) =>
                  progress?.start(
                    m.vm,
                    m.disks.reduce((a, d) => a + d.bytes, 0),
                  ),
                progress: (vm, done, total) => progress?.update(vm, done, total),
                finished: (vm, r) => progress?.stop(vm, r.step),
              },
            },
          );
          progress?.close();
          for (const s of result.statuses) {
            const m = s.migration;
            const extra = m
              ? ` migration ${m.step}${m.pauseMs !== undefined ? `, pause ${m.pauseMs} ms` : ''}`
              : '';
            const why =
              s.phase === 'Placed' ? '' : ` (${s.conditions[0]?.reason}: ${s.conditions[0]?.message})`;
            const held = result.deferred.get(s.metadata.name);
            io.out(
              `${safeText(`${s.metadata.name}: ${s.phase}${why}${extra}${held ? `; held back: ${held}` : ''}`)}\n`,
            );
          }
          setExit(result.anyFailed || !result.converged ? EXIT.failed : EXIT.ok);
        } finally {
          progress?.close();
        }
      },
    );

  addImportCommand(program, io, setExit);
  addDaemonCommand(program, setExit);

  return program;
}

/** Entry point of the `vmplace` binary; resolves with the exit code. */
export async function main(argv: string[], io: Io = defaultIo): Promise<number> {
  let code: number = EXIT.ok;
  const program = buildProgram(io, (c) => (code = c));
  try {
    await program.parseAsync(argv);
    return code;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : EXIT.invalid;
    io.err(`vmplace: ${(err as Error).message}\n`);
    return EXIT.invalid;
  }
}
