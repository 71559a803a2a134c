/**
 * `vmplace status [REPO] [--watch] [--daemon URL]` (issue 11): the table from the status files,
 * re-rendered when they change, or live from a daemon's `GET /v1/status` (the real HTTP server
 * of src/daemon/http.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { main } from '../../../src/cli/main';
import { renderFleetTable } from '../../../src/cli/fleet-table';
import { startHttpServer, type HttpServer } from '../../../src/daemon/http';
import { DaemonMetrics } from '../../../src/daemon/metrics';
import type { VirtualMachineStatus } from '../../../src/types';
import { vmStatus } from '../../support/builders';
import { memoryLogger } from '../../support/logger';
import { cleanupTmp, tmpDir } from '../../support/tmp';

const ROOT = path.resolve(__dirname, '../../..');
const FLEET = path.join(ROOT, 'examples/fleet');

afterAll(cleanupTmp);

interface Run {
  code: Promise<number>;
  out: () => string;
  err: () => string;
}

function start(args: string[], until?: Promise<unknown>): Run {
  let out = '';
  let err = '';
  const code = main(['node', 'vmplace', ...args], {
    out: (s) => (out += s),
    err: (s) => (err += s),
    isTTY: false,
    ...(until ? { until } : {}),
  });
  return { code, out: () => out, err: () => err };
}

async function eventually(check: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 25));
  }
}

function copyFleet(): string {
  const dir = tmpDir();
  fs.cpSync(FLEET, dir, { recursive: true });
  return dir;
}

describe('vmplace status REPO', () => {
  it('prints the fleet table of the status files; exit 0', async () => {
    const r = start(['status', FLEET]);
    expect(await r.code).toBe(0);
    expect(r.out()).toMatch(/^VM +HOST +STORAGE +PHASE +STEP +PROGRESS +PAUSE\n/);
    expect(r.out()).toMatch(/\ndb-01 +hv-east-2 +csv1,local +Pending +- +- +-\n/);
    expect(r.out().trimEnd().split('\n')).toHaveLength(7);
    expect(r.err()).toBe('');
  });

  it('a broken status file: its problem at FILE:LINE:COL, the other VMs shown, exit 2', async () => {
    const repo = copyFleet();
    fs.writeFileSync(path.join(repo, 'status/vms/web-02.yaml'), 'kind: [\n');
    const r = start(['status', repo]);
    expect(await r.code).toBe(2);
    expect(r.err()).toMatch(/^status\/vms\/web-02\.yaml:\d+:\d+: /m);
    expect(r.out()).toContain('db-01');
    expect(r.out()).not.toContain('web-02');
  });

  it('no status/: says nothing was observed yet, exit 0', async () => {
    const repo = tmpDir();
    const r = start(['status', repo]);
    expect(await r.code).toBe(0);
    expect(r.out()).toBe('');
    expect(r.err()).toContain('nothing observed yet');
  });

  it('--watch renders again when a status file changes, and stops when told', async () => {
    const repo = copyFleet();
    let stop!: () => void;
    const until = new Promise<void>((r) => (stop = r));
    const r = start(['status', repo, '--watch'], until);
    await eventually(() => r.out().includes('web-02'));
    // give chokidar its first scan before the change
    await new Promise((res) => setTimeout(res, 300));
    const file = path.join(repo, 'status/vms/web-02.yaml');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('phase: Pending', 'phase: Migrating'));
    await eventually(() => /\nweb-02 +hv-east-1 +local +Migrating /.test(r.out()));
    stop();
    expect(await r.code).toBe(0);
    // two tables: the first and the one after the change
    expect(r.out().match(/^VM +HOST/gm)).toHaveLength(2);
  });
});

describe('vmplace status --daemon URL', () => {
  let server: HttpServer;
  let vms: VirtualMachineStatus[];

  beforeAll(async () => {
    server = await startHttpServer({
      listen: '127.0.0.1:0',
      metrics: new DaemonMetrics({ defaultMetrics: false }),
      onWebhook: () => undefined,
      isReady: () => true,
      fleet: () => ({ vms, hosts: [] }),
      logger: memoryLogger().logger,
    });
  });
  afterAll(() => server.close());
  beforeEach(() => {
    vms = [vmStatus('web-01'), vmStatus('db-01')];
  });

  it("renders what the daemon's GET /v1/status serves", async () => {
    const r = start(['status', '--daemon', server.address.url]);
    expect(await r.code).toBe(0);
    expect(r.out()).toBe(renderFleetTable(vms));
  });

  it('--watch asks again every --interval', async () => {
    let stop!: () => void;
    const until = new Promise<void>((r) => (stop = r));
    const r = start(['status', '--daemon', server.address.url, '--watch', '--interval', '100ms'], until);
    await eventually(() => r.out().includes('web-01'));
    vms = [{ ...vmStatus('web-01'), phase: 'Migrating' }];
    await eventually(() => /\nweb-01 +- +- +Migrating /.test(r.out()));
    stop();
    expect(await r.code).toBe(0);
  });

  it('no daemon there: exit 2 with a message that names the address, never its credentials', async () => {
    const r = start(['status', '--daemon', 'http://bot:s3cret@127.0.0.1:1']);
    expect(await r.code).toBe(2);
    expect(r.err()).toContain('cannot reach the daemon at http://127.0.0.1:1/v1/status');
    expect(r.err()).not.toContain('s3cret');
  });

  it('a daemon without the endpoint (404): exit 2', async () => {
    const bare = await startHttpServer({
      listen: '127.0.0.1:0',
      metrics: new DaemonMetrics({ defaultMetrics: false }),
      onWebhook: () => undefined,
      isReady: () => true,
      logger: memoryLogger().logger,
    });
    try {
      const r = start(['status', '--daemon', bare.address.url]);
      expect(await r.code).toBe(2);
      expect(r.err()).toContain('answered 404');
    } finally {
      await bare.close();
    }
  });

  it('GET /v1/status is JSON, read-only (POST: 405)', async () => {
    const res = await fetch(`${server.address.url}/v1/status`);
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(await res.json()).toEqual({ vms, hosts: [] });
    const post = await fetch(`${server.address.url}/v1/status`, { method: 'POST' });
    expect(post.status).toBe(405);
  });
});
