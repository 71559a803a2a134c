/**
 * Problems for CI systems, so they appear on the changed lines of a pull request: GitHub Actions
 * workflow commands (`::error file=F,line=L,col=C::message`), a GitLab Code Quality report, and a
 * generic JSON list. Pure string building; the same caps as the text output (see
 * {@link capProblems}), and the same safe text (no control, bidi or zero-width characters).
 */
import { createHash } from 'node:crypto';
import { safeText } from '../text';
import type { Problem } from '../types';
import { capProblems } from './format';

/** Output formats of `vmplace validate`. */
export type ProblemFormat = 'text' | 'github' | 'gitlab' | 'json';

/** A problem with its severity: errors fail validation, warnings only inform. */
export interface RatedProblem extends Problem {
  severity: 'error' | 'warning';
}

/**
 * The data of a GitHub workflow command (its message), escaped the way the runner unescapes it:
 * `%` as `%25`, CR as `%0D`, LF as `%0A` (see actions/toolkit `escapeData`); other unsafe
 * characters then replaced (see {@link safeText}).
 */
export function escapeGithubData(text: string): string {
  return safeText(text.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A'));
}

/** A property value of a GitHub workflow command: like the data, plus `:` as `%3A` and `,` as `%2C`. */
export function escapeGithubProperty(text: string): string {
  return safeText(
    text
      .replace(/%/g, '%25')
      .replace(/\r/g, '%0D')
      .replace(/\n/g, '%0A')
      .replace(/:/g, '%3A')
      .replace(/,/g, '%2C'),
  );
}

function rated(problems: readonly Problem[], warnings: readonly Problem[]): RatedProblem[] {
  const { shown } = capProblems([
    ...problems.map((p) => ({ ...p, severity: 'error' as const })),
    ...warnings.map((p) => ({ ...p, severity: 'warning' as const })),
  ]);
  return shown as RatedProblem[];
}

/** One `::error` or `::warning` workflow command per problem (`title` is the object, when known). */
export function formatGithub(problems: readonly Problem[], warnings: readonly Problem[] = []): string[] {
  return rated(problems, warnings).map((p) => {
    const props = [
      `file=${escapeGithubProperty(p.file)}`,
      `line=${p.line}`,
      `col=${p.col}`,
      ...(p.object ? [`title=${escapeGithubProperty(p.object)}`] : []),
    ];
    return `::${p.severity} ${props.join(',')}::${escapeGithubData(p.message)}`;
  });
}

/** One entry of a GitLab Code Quality report (the subset GitLab reads). */
export interface CodeQualityIssue {
  description: string;
  check_name: string;
  fingerprint: string;
  severity: 'info' | 'minor' | 'major' | 'critical' | 'blocker';
  location: { path: string; lines: { begin: number } };
}

/**
 * A GitLab Code Quality report (a JSON array; errors `major`, warnings `minor`). The fingerprint
 * is a hash of file, line, column and message, so the same problem keeps it across pipelines.
 */
export function formatGitlab(problems: readonly Problem[], warnings: readonly Problem[] = []): string {
  const issues: CodeQualityIssue[] = rated(problems, warnings).map((p) => {
    const description = safeText(`${p.object ? `${p.object}: ` : ''}${p.message}`);
    return {
      description,
      check_name: 'vmplace',
      fingerprint: createHash('md5')
        .update(JSON.stringify([p.file, p.line, p.col, description]))
        .digest('hex'),
      severity: p.severity === 'error' ? 'major' : 'minor',
      location: { path: safeText(p.file), lines: { begin: p.line } },
    };
  });
  return `${JSON.stringify(issues, null, 2)}\n`;
}

/** A generic JSON list: `[{ severity, file, line, col, object?, message }]`. */
export function formatJson(problems: readonly Problem[], warnings: readonly Problem[] = []): string {
  const list = rated(problems, warnings).map((p) => ({
    severity: p.severity,
    file: safeText(p.file),
    line: p.line,
    col: p.col,
    ...(p.object ? { object: safeText(p.object) } : {}),
    message: safeText(p.message),
  }));
  return `${JSON.stringify(list, null, 2)}\n`;
}
