/**
 * Durations on the command line (`--interval 30s`): a whole number and one unit, nothing else.
 */
import { StalledError } from './errors';

const UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
type Unit = keyof typeof UNITS;
const DURATION = /^(\d{1,15})(ms|s|m|h)$/;

/**
 * Milliseconds of `500ms`, `2s`, `5m` or `1h`: a whole number directly followed by one of
 * `ms`, `s`, `m`, `h`. No spaces, signs, fractions, compound forms (`1m30s`) or bare numbers,
 * so a typo cannot silently mean something else.
 *
 * @throws StalledError `InvalidDuration` naming the input and the accepted forms.
 */
export function parseDuration(text: string): number {
  const m = DURATION.exec(text);
  const ms = m ? Number(m[1]) * UNITS[m[2] as Unit] : NaN;
  if (!m || !Number.isSafeInteger(ms)) {
    throw new StalledError(
      'InvalidDuration',
      `invalid duration ${JSON.stringify(text)}: expected a whole number followed by ms, s, m or h ` +
        `(e.g. 500ms, 30s, 5m, 1h)`,
    );
  }
  return ms;
}

/**
 * The shortest form {@link parseDuration} reads back as the same value: the largest unit that
 * divides it (`90000` → `90s`, `3600000` → `1h`, `1500` → `1500ms`). Fractions are rounded to
 * whole milliseconds.
 *
 * @throws RangeError for negative or non-finite input.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`not a duration: ${ms}`);
  const whole = Math.round(ms);
  for (const unit of ['h', 'm', 's'] as const) {
    if (whole !== 0 && whole % UNITS[unit] === 0) return `${whole / UNITS[unit]}${unit}`;
  }
  return `${whole}ms`;
}
