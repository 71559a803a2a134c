/**
 * Text from manifests, status files, hosts or errors on its way to a terminal, a log line or a
 * pull-request comment: one line, no control characters, no characters that reorder or hide
 * text (bidi overrides and isolates, zero-width characters), so what a reviewer reads is what
 * the bytes say.
 */

/**
 * C0 and C1 controls (with DEL), line and paragraph separators, bidi embeddings, overrides,
 * isolates and marks (U+202A-202E, U+2066-2069, U+200E/200F, U+061C), zero-width and invisible
 * characters (U+200B-200D, U+2060-2064, U+FEFF, U+180E).
 */
export const UNSAFE_CHARS =
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  /[\u0000-\u001f\u007f-\u009f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;

/** `text` with every {@link UNSAFE_CHARS} character replaced by `replacement` (default `?`). */
export function safeText(text: string, replacement = '?'): string {
  return text.replace(UNSAFE_CHARS, replacement);
}

/**
 * `@name` that GitHub would turn into a mention (and a notification) written so it is not one:
 * a zero-width space after the `@` as an HTML entity, the way Dependabot quotes release notes.
 * For markdown only; call after escaping.
 */
export function neutraliseMentions(markdown: string): string {
  return markdown.replace(/@(?=[A-Za-z0-9])/g, '@&#8203;');
}

/** JSON-quote a value for a message, truncated; never contains raw control characters. */
export function quote(value: unknown, max = 80): string {
  let s: string;
  try {
    s = JSON.stringify(value) ?? String(value);
  } catch {
    s = String(value);
  }
  // JSON.stringify leaves U+2028/2029 and C1 controls raw; escape them too
  s = s.replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
