// Check a GitHub Actions workflow read from stdin with GitHub's own parser (@actions/workflow-parser,
// the one behind the Actions language service): `parseWorkflow` checks it against GitHub's
// workflow schema (the package's workflow-v1.0 schema), `convertWorkflowTemplate` then checks what
// the schema cannot (job ids, needs, expressions). Prints JSON: { errors: [message, ...] }. Run as
// a child process: the package is an ES module only, and it imports its schema JSON without the
// `with { type: 'json' }` attribute Node asks for (it is built for bundlers), so a load hook adds it.
'use strict';

const HOOK = `export async function load(url, context, next) {
  if (url.endsWith('.json')) context = { ...context, importAttributes: { type: 'json' } };
  return next(url, context);
}`;

async function main() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  const content = Buffer.concat(chunks).toString('utf8');
  require('node:module').register(`data:text/javascript,${encodeURIComponent(HOOK)}`);
  const { parseWorkflow, convertWorkflowTemplate, NoOperationTraceWriter } =
    await import('@actions/workflow-parser');
  const { context, value } = parseWorkflow(
    { name: process.argv[2] || 'workflow.yml', content },
    new NoOperationTraceWriter(),
  );
  // conversion adds its own findings to the same context (it stops early after schema errors)
  if (value) await convertWorkflowTemplate(context, value);
  const errors = context.errors.getErrors().map((e) => e.message);
  process.stdout.write(JSON.stringify({ errors: value ? errors : ['no workflow parsed', ...errors] }));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack));
  process.exit(1);
});
