/** What `vmplace import` prints: the files added (with --dry-run, their text), then the notes. */
import { safeText } from '../../text';
import type { ImportReport } from './run';

export function renderImportReport(r: ImportReport, dryRun: boolean): string {
  const out: string[] = [];
  const verb = dryRun ? 'would write' : 'wrote';
  for (const f of r.manifests) {
    out.push(`${verb} ${f.rel}`);
    if (dryRun)
      out.push(
        ...f.text
          .trimEnd()
          .split('\n')
          .map((l) => `    ${safeText(l)}`),
      );
  }
  if (r.status.length) out.push(`${verb} ${r.status.length} status file(s): ${r.status.join(', ')}`);
  if (!r.manifests.length)
    out.push('no manifest to add: every domain found is declared already (or reported below)');
  for (const n of r.notes)
    out.push(`${n.severity}: ${n.reason}: ${safeText(n.subject)}: ${safeText(n.message)}`);
  const vms = r.manifests.filter((f) => f.kind === 'VirtualMachine').length;
  const moves = r.plan?.migrations.length ?? 0;
  out.push(
    `${dryRun ? 'dry run: ' : ''}${r.manifests.length} manifest(s) (${vms} VM(s)); vmplace plan would show ${moves} migration(s)`,
  );
  return out.join('\n') + '\n';
}
