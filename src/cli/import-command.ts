/** `vmplace import`: parse its options, run the import (app/import), print the report. */
import * as path from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import { EXIT } from '../app/commands';
import { isManifestName } from '../app/import/decide';
import { type HostOption, parseHostOption } from '../app/import/host-option';
import { renderImportReport } from '../app/import/report';
import { runImport } from '../app/import/run';
import { createLogger } from '../log';
import { safeText } from '../text';
import { type Io, printProblems, TRUST_FILE_HELP } from './io';

export function addImportCommand(program: Command, io: Io, setExit: (code: number) => void): void {
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
}
