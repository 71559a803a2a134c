import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ts from 'typescript';
import { StalledError } from '../../../src/errors';
import { acquireLock, processStartTime, workdirLockLocation } from '../../../src/daemon/lock';

const SRC = path.resolve(__dirname, '../../../src');
let tmp: string;
let lockModule: string;
const children: ChildProcess[] = [];

/** The real lock.ts (and errors.ts, backoff.ts) as CommonJS, so a second node process can use it. */
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-lock-'));
  for (const rel of ['daemon/lock.ts', 'errors.ts', 'backoff.ts']) {
    const out = ts.transpileModule(fs.readFileSync(path.join(SRC, rel), 'utf8'), {
      compilerOptions: {
        module: ts.ModuleKind.CommonJS,
        target: ts.ScriptTarget.ES2022,
        esModuleInterop: true,
      },
    }).outputText;
    const dest = path.join(tmp, 'src', rel.replace(/\.ts$/, '.js'));
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.writeFileSync(dest, out);
  }
  lockModule = path.join(tmp, 'src', 'daemon', 'lock.js');
});

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let n = 0;
const lockDir = () => path.join(tmp, `state-${++n}`);

/** A second process that takes the lock and reports `held` or `refused <reason>` on stdout. */
function holder(dir: string): Promise<{ child: ChildProcess; outcome: string }> {
  const script = `require(${JSON.stringify(lockModule)}).acquireLock(${JSON.stringify(dir)}, 'daemon').then(
    () => { process.stdout.write('held\\n'); setInterval(() => {}, 1000); },
    (e) => { process.stdout.write('refused ' + e.reason + '\\n'); process.exit(3); })`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve({ child, outcome: out.trim() });
    });
    child.on('error', reject);
    // 'close', not 'exit': a child's stdout may still hold its last line when 'exit' fires
    // (seen on a busy CI machine: "refused AlreadyRunning" arrived after the exit event)
    child.on('close', (code) => {
      if (!out.includes('\n')) reject(new Error(`holder exited ${code} without a word`));
    });
  });
}

const killed = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    child.on('exit', () => resolve());
    child.kill('SIGKILL');
  });

describe('acquireLock', () => {
  it('refuses while another live process holds the lock, naming its pid', async () => {
    const dir = lockDir();
    const { child, outcome } = await holder(dir);
    expect(outcome).toBe('held');
    const err = await acquireLock(dir, 'daemon').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StalledError);
    expect(err).toMatchObject({
      reason: 'AlreadyRunning',
      message: expect.stringContaining(`pid ${child.pid}`),
    });
    const content = JSON.parse(fs.readFileSync(path.join(dir, 'daemon.lock'), 'utf8'));
    expect(content).toMatchObject({ pid: child.pid, hostname: os.hostname(), startTime: expect.any(Number) });
  });

  it('takes over the lock of a killed holder', async () => {
    const dir = lockDir();
    const { child } = await holder(dir);
    await killed(child);
    const lock = await acquireLock(dir, 'daemon');
    const content = JSON.parse(fs.readFileSync(lock.path, 'utf8'));
    expect(content).toMatchObject({ pid: process.pid, startTime: processStartTime(process.pid) });
    // and now a second process is refused by us
    expect((await holder(dir)).outcome).toBe('refused AlreadyRunning');
    await lock.release();
    expect(fs.existsSync(lock.path)).toBe(false);
    expect((await holder(dir)).outcome).toBe('held');
  });

  it('takes over a lock whose pid is alive but belongs to a process started at another time', async () => {
    const dir = lockDir();
    fs.mkdirSync(dir, { recursive: true });
    const reused = {
      pid: process.pid,
      startTime: 1,
      hostname: os.hostname(),
      acquiredAt: '2020-01-01T00:00:00Z',
    };
    fs.writeFileSync(path.join(dir, 'daemon.lock'), JSON.stringify(reused));
    const lock = await acquireLock(dir, 'daemon');
    expect(JSON.parse(fs.readFileSync(lock.path, 'utf8')).startTime).toBe(processStartTime(process.pid));
    // the same process asking twice is refused too
    await expect(acquireLock(dir, 'daemon')).rejects.toMatchObject({ reason: 'AlreadyRunning' });
    await lock.release();
  });

  it('never judges a lock of another host stale', async () => {
    const dir = lockDir();
    fs.mkdirSync(dir, { recursive: true });
    const remote = {
      pid: 999_999_999,
      startTime: 1,
      hostname: 'elsewhere',
      acquiredAt: '2020-01-01T00:00:00Z',
    };
    fs.writeFileSync(path.join(dir, 'daemon.lock'), JSON.stringify(remote));
    await expect(acquireLock(dir, 'daemon')).rejects.toMatchObject({
      reason: 'AlreadyRunning',
      message: expect.stringContaining('pid 999999999 on host elsewhere'),
    });
  });

  it('takes over an old unreadable lock file', async () => {
    const dir = lockDir();
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'daemon.lock');
    fs.writeFileSync(file, '');
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(file, old, old);
    const lock = await acquireLock(dir, 'daemon');
    expect(JSON.parse(fs.readFileSync(file, 'utf8')).pid).toBe(process.pid);
    await lock.release();
  });

  it('release leaves a lock that is no longer ours alone', async () => {
    const dir = lockDir();
    const lock = await acquireLock(dir, 'daemon');
    fs.writeFileSync(lock.path, JSON.stringify({ pid: 1, startTime: null, hostname: 'x', acquiredAt: 'y' }));
    await lock.release();
    expect(fs.existsSync(lock.path)).toBe(true);
  });

  it('lets exactly one of several processes take over a stale lock', async () => {
    const dir = lockDir();
    const { child } = await holder(dir);
    await killed(child);
    const outcomes = (await Promise.all([1, 2, 3, 4, 5, 6].map(() => holder(dir)))).map((h) => h.outcome);
    expect(outcomes.filter((o) => o === 'held')).toHaveLength(1);
    expect(outcomes.filter((o) => o === 'refused AlreadyRunning')).toHaveLength(5);
  });

  it('locks a workdir from beside it', () => {
    expect(workdirLockLocation('/var/lib/vmplace/work/')).toEqual({
      dir: '/var/lib/vmplace',
      name: '.work.vmplace',
    });
  });
});
