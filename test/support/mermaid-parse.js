// Parse Mermaid text read from stdin with the real `mermaid` package, the way a renderer would:
// `mermaid.parse` (the grammar) and, for a gantt chart, the diagram database's task list (which
// resolves every date and fails on a bad one). Prints JSON: { ok, type, tasks } or { ok: false,
// error }. Run as a child process: mermaid is an ES module and needs a DOM window for DOMPurify,
// which jsdom gives here (no browser).
'use strict';

async function main() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  const { JSDOM } = require('jsdom');
  const dom = new JSDOM('');
  globalThis.window = dom.window;
  globalThis.document = dom.window.document;
  const { default: mermaid } = await import('mermaid');
  try {
    const parsed = await mermaid.parse(text);
    const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
    const tasks =
      parsed.diagramType === 'gantt'
        ? diagram.db.getTasks().map((t) => ({
            id: t.id,
            task: t.task,
            section: t.section,
            start: +t.startTime,
            end: +t.endTime,
            crit: Boolean(t.crit),
          }))
        : [];
    process.stdout.write(JSON.stringify({ ok: true, type: parsed.diagramType, tasks }));
  } catch (err) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(err && err.message) }));
  }
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack));
  process.exit(1);
});
