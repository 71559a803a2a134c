import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline/promises';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import {
  applyRepo,
  DEFAULT_TRUST_FILE,
  EXIT,
  fromCwd,
  loadForApply,
  planExitCode,
  planRepo,
  renderPlanAs,
  renderProblems,
  trustFor,
  validateRepo,
  writeOutput,
} from '../app/commands';
import { createDaemon } from '../app/compose';
import { isManifestName } from '../app/import/decide';
import { type HostOption, parseHostOption } from '../app/import/host-option';
import { renderImportReport } from '../app/import/report';
import { runImport } from '../app/import/run';
import { fetchFleet, readFleet, watchStatusFiles, type Fleet } from '../app/fleet';
import { readWebhookSecret } from '../daemon/http';
import { parseDuration } from '../duration';
import { createLogger } from '../log';
import { formatProblemsCapped } from '../manifests/format';
import type { ProblemFormat } from '../manifests/format-ci';
import { renderPlanTable } from '../planner/render';
import { readGitCredentials } from '../status/git';
import { safeText } from '../text';
import type { Problem } from '../types';
import { renderFleetTable } from './fleet-table';
import { ProgressView } from './progress';

export { EXIT };

interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  isTTY: boolean;
  /** `status --watch` stops when this settles (default: SIGINT or SIGTERM); for tests */
  until?: Promise<unknown>;
}

const defaultIo: Io = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  isTTY: Boolean(process.stdin.isTTY && process.stdout.isTTY),
};

function printProblems(io: Io, problems: Problem[]): void {
  for (const line of formatProblemsCapped(problems)) io.err(line + '\n');
}

function printWarnings(io: Io, warnings: Problem[]): void {
  for (const line of formatProblemsCapped(warnings.map((w) => ({ ...w, message: `warning: ${w.message}` }))))
    io.err(line + '\n');
}

const TRUST_FILE_HELP = `operator's bounds on what manifests may name (default ${DEFAULT_TRUST_FILE} when present)`;

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

  program
    .command('import')
    .description(
      'adopt running hosts: write the missing Host, Cluster and VirtualMachine manifests (each VM where it is) and their status files',
    )
    .argument('[repo]', 'the GitOps repository', '.')
    .option(
      '--host <name=uri[,identityFile=F,knownHostsFile=F,transferAddress=A]>',
      'a host to adopt (repeatable); without it, the hosts of the Host manifests',
      (v: string, prev: HostOption[]) => {
        try {
          return [...prev, parseHostOption(v)];
        } catch (err) {
          throw new InvalidArgumentError((err as Error).message);
        }
      },
      [] as HostOption[],
    )
    .option('--cluster <name>', 'the Cluster the new hosts join')
    .option(
      '--shared <path>',
      'storage found at this path on every new host is one shared filesystem: Cluster storage (repeatable; needs --cluster)',
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option('--dry-run', 'print what would be written; write nothing')
    .option('--trust-file <file>', TRUST_FILE_HELP)
    .action(
      async (
        repo: string,
        opts: {
          host: HostOption[];
          cluster?: string;
          shared: string[];
          dryRun?: boolean;
          trustFile?: string;
        },
      ) => {
        if (opts.shared.length && !opts.cluster) {
          io.err('vmplace import: --shared needs --cluster NAME (the Cluster whose storage it is)\n');
          return setExit(EXIT.invalid);
        }
        if (opts.cluster !== undefined && !isManifestName(opts.cluster)) {
          io.err(
            `vmplace import: --cluster ${safeText(opts.cluster)} is not a manifest name (a lowercase DNS label)\n`,
          );
          return setExit(EXIT.invalid);
        }
        const report = await runImport({
          root: path.resolve(repo),
          hosts: opts.host,
          shared: opts.shared,
          dryRun: Boolean(opts.dryRun),
          ...(opts.cluster ? { cluster: opts.cluster } : {}),
          ...(opts.trustFile ? { trustFile: opts.trustFile } : {}),
          logger: createLogger({ format: 'pretty', level: process.env.VMPLACE_LOG_LEVEL ?? 'warn' }),
        });
        printProblems(io, report.problems);
        if (report.problems.length) return setExit(EXIT.invalid);
        io.out(renderImportReport(report, Boolean(opts.dryRun)));
        setExit(report.notes.some((n) => n.severity === 'warning') ? EXIT.failed : EXIT.ok);
      },
    );

  program
    .command('daemon')
    .description(
      'follow a GitOps repository: fetch, plan, migrate, commit status; serve health, metrics, webhooks',
    )
    .requiredOption('--repo <url-or-path>', 'the GitOps repository to follow (a URL or a local path)')
    .option('--branch <name>', 'branch to follow and to push status to', 'main')
    .option('--workdir <dir>', "the daemon's own clone", '/var/lib/vmplace/repo')
    .option('--state-dir <dir>', 'where migration state is kept', '/var/lib/vmplace')
    .option('--interval <duration>', 'poll interval (500ms, 2s, 5m)', '30s')
    .option('--listen <host:port>', 'health, readiness, metrics and webhook address', '127.0.0.1:9464')
    .option(
      '--webhook-secret-file <file>',
      'require GitHub-style X-Hub-Signature-256 webhooks signed with this secret',
    )
    .option(
      '--git-credentials-file <file>',
      'USER:TOKEN for an https --repo, given to git by a credential helper (never in argv or .git/config)',
    )
    .option('--trust-file <file>', TRUST_FILE_HELP)
    .option('--author-name <name>', 'author of status commits', 'vmplace')
    .option('--author-email <email>', 'email of status commits', 'vmplace@localhost')
    .option(
      '--signing-key <key>',
      'sign status commits (a GnuPG key id, or an ssh public key with --signing-format ssh)',
    )
    .addOption(
      new Option('--signing-format <format>', 'gpg.format for signing').choices(['openpgp', 'ssh', 'x509']),
    )
    .option(
      '--shutdown-timeout <duration>',
      'how long SIGTERM waits for migrations to reach a checkpoint',
      '120s',
    )
    .addOption(
      new Option('--log-format <format>', 'log format on stderr').choices(['json', 'pretty']).default('json'),
    )
    .action(
      async (opts: {
        repo: string;
        branch: string;
        workdir: string;
        stateDir: string;
        interval: string;
        listen: string;
        webhookSecretFile?: string;
        gitCredentialsFile?: string;
        trustFile?: string;
        authorName: string;
        authorEmail: string;
        signingKey?: string;
        signingFormat?: 'openpgp' | 'ssh' | 'x509';
        shutdownTimeout: string;
        logFormat: 'json' | 'pretty';
      }) => {
        const logger = createLogger({ format: opts.logFormat });
        const secret = opts.webhookSecretFile ? await readWebhookSecret(opts.webhookSecretFile) : undefined;
        const gitCredentials = opts.gitCredentialsFile
          ? await readGitCredentials(opts.gitCredentialsFile)
          : undefined;
        const trust = trustFor(opts.trustFile, { stateDir: opts.stateDir, workdir: opts.workdir });
        const repo =
          /^[a-z][a-z0-9+.-]*:\/\//i.test(opts.repo) || /^[^/]+@[^:]+:/.test(opts.repo)
            ? opts.repo
            : path.resolve(opts.repo);
        const daemon = createDaemon({
          repo,
          branch: opts.branch,
          workdir: path.resolve(opts.workdir),
          stateDir: path.resolve(opts.stateDir),
          intervalMs: parseDuration(opts.interval),
          listen: opts.listen,
          ...(secret ? { webhookSecret: secret } : {}),
          ...(gitCredentials ? { gitCredentials } : {}),
          trust,
          author: { name: opts.authorName, email: opts.authorEmail },
          ...(opts.signingKey ? { signingKey: opts.signingKey } : {}),
          ...(opts.signingFormat ? { signingFormat: opts.signingFormat } : {}),
          shutdownTimeoutMs: parseDuration(opts.shutdownTimeout),
          logger,
        });
        await daemon.start();
        let stopFailed = false;
        await new Promise<void>((resolve) => {
          const onSignal = (sig: string) => {
            logger.info({ signal: sig }, 'signal received');
            // detached (a signal handler cannot wait): it settles the promise awaited here; a
            // failed stop is logged and ends the process with EXIT.failed, not as an unhandled rejection
            void daemon.stop().then(resolve, (err: unknown) => {
              logger.error({ err }, 'stop failed');
              stopFailed = true;
              resolve();
            });
          };
          process.once('SIGTERM', () => onSignal('SIGTERM'));
          process.once('SIGINT', () => onSignal('SIGINT'));
        });
        setExit(stopFailed ? EXIT.failed : EXIT.ok);
      },
    );

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
