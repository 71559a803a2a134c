/* global AbortSignal */
// A small etcd client for the lab tests: puts KEY every INTERVAL ms through the etcd3 client and
// prints one line per attempt: `OK <seq> <ms>` or `ERR <seq> <ms> <error name>` (ms: how long
// the put took). Argv: ENDPOINTS(comma-separated) KEY INTERVAL_MS DEADLINE_MS (0: no deadline)
// [PROBE_URL]: with a PROBE_URL it also GETs that URL each round and prints `HTTP ok|err`, to show
// that a partitioned writer still reaches everything but etcd. ETCD_WRITER_HOST_BREAKER=off
// replaces etcd3's per-host circuit breaker (open for 5 s after 3 failures) by no policy.
const { Etcd3 } = require('etcd3');

const [endpoints = '', key = 'writer', intervalArg = '100', deadlineArg = '1000', probeUrl] =
  process.argv.slice(2);
const interval = Number(intervalArg);
const deadline = Number(deadlineArg);
const faultHandling =
  process.env.ETCD_WRITER_HOST_BREAKER === 'off' ? { host: () => require('cockatiel').noop } : {};
const client = new Etcd3({ hosts: endpoints.split(','), faultHandling });

async function main() {
  for (let seq = 1; ; seq++) {
    const t0 = Date.now();
    try {
      const put = client.put(key).value(String(seq));
      if (deadline > 0) put.options({ deadline: Date.now() + deadline });
      await put;
      process.stdout.write(`OK ${seq} ${Date.now() - t0}\n`);
    } catch (err) {
      process.stdout.write(`ERR ${seq} ${Date.now() - t0} ${err && err.name}\n`);
    }
    if (probeUrl) {
      const ok = await fetch(probeUrl, { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.ok,
        () => false,
      );
      process.stdout.write(`HTTP ${ok ? 'ok' : 'err'}\n`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}
// exit with the test process: it holds our stdin open
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
void main();
