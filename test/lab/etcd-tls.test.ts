/**
 * `--etcd-cacert/--etcd-cert/--etcd-key` and `--etcd-auth-file` against a real etcd that
 * requires TLS with client certificates (one member on loopback, certificates made here with
 * openssl): a replica with the CA and its client certificate joins and takes a VM's lock; one
 * without a client certificate, or trusting another CA, never becomes ready.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import { EtcdCoordination } from '../../src/coord/etcd/coordination';
import type { EtcdOptions } from '../../src/coord/etcd/options';
import { freePorts, labTempDir } from '../../src/lab';

jest.setTimeout(120_000);
const run = promisify(execFile);

let dir: string;
let etcd: ChildProcess | undefined;
let endpoint: string;

async function openssl(...args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir });
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA. */
async function certificates(name: string): Promise<void> {
  await openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '1',
    '-subj',
    `/CN=${name} CA`,
    '-keyout',
    `${name}-ca.key`,
    '-out',
    `${name}-ca.pem`,
  );
  for (const who of ['server', 'client']) {
    await openssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      `/CN=${who}`,
      '-keyout',
      `${name}-${who}.key`,
      '-out',
      `${name}-${who}.csr`,
    );
    await fs.writeFile(
      path.join(dir, `${name}-${who}.ext`),
      who === 'server'
        ? 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'
        : 'extendedKeyUsage=clientAuth\n',
    );
    await openssl(
      'x509',
      '-req',
      '-in',
      `${name}-${who}.csr`,
      '-CA',
      `${name}-ca.pem`,
      '-CAkey',
      `${name}-ca.key`,
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      `${name}-${who}.ext`,
      '-out',
      `${name}-${who}.pem`,
    );
  }
}

beforeAll(async () => {
  dir = await labTempDir('vmplace-etcd-tls-');
  await certificates('good');
  await certificates('other');
  const [client, peer] = await freePorts(2);
  endpoint = `https://127.0.0.1:${client}`;
  const f = (n: string) => path.join(dir, n);
  etcd = spawn(
    'setpriv',
    [
      '--pdeathsig',
      'KILL',
      '--',
      'etcd',
      '--name',
      'tls',
      '--data-dir',
      f('tls.etcd'),
      '--listen-client-urls',
      endpoint,
      '--advertise-client-urls',
      endpoint,
      '--listen-peer-urls',
      `http://127.0.0.1:${peer}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${peer}`,
      '--initial-cluster',
      `tls=http://127.0.0.1:${peer}`,
      '--cert-file',
      f('good-server.pem'),
      '--key-file',
      f('good-server.key'),
      '--client-cert-auth',
      '--trusted-ca-file',
      f('good-ca.pem'),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  etcd.stderr!.on('data', (b: Buffer) => (log += b.toString()));
  const end = Date.now() + 20_000;
  while (!/ready to serve client requests/.test(log)) {
    if (Date.now() > end) throw new Error(`etcd with TLS did not start:\n${log.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
});
afterAll(async () => {
  etcd?.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 200));
  await fs.rm(dir, { recursive: true, force: true });
});

const coordination = (replicaId: string, tls: EtcdOptions['tls']) =>
  new EtcdCoordination(
    {
      endpoints: [endpoint],
      prefix: `/tls-${process.pid}/`,
      replicaId,
      leaseTtlMs: 3000,
      ...(tls ? { tls } : {}),
    },
    pino({ level: 'silent' }),
  );

async function readyWithin(c: EtcdCoordination, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (c.health().ready) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

test('a replica with the CA and its client certificate joins and takes a lock', async () => {
  const f = (n: string) => path.join(dir, n);
  const c = coordination('a', {
    ca: f('good-ca.pem'),
    cert: f('good-client.pem'),
    key: f('good-client.key'),
  });
  c.start();
  expect(await readyWithin(c, 15_000)).toBe(true);
  await c.balance(['web-01'], () => false);
  expect(c.owns('web-01')).toBe(true);
  await c.close();
});

test('without a client certificate, or with another CA’s, a replica never becomes ready', async () => {
  const f = (n: string) => path.join(dir, n);
  const noCert = coordination('b', { ca: f('good-ca.pem') });
  const otherCa = coordination('c', {
    ca: f('other-ca.pem'),
    cert: f('other-client.pem'),
    key: f('other-client.key'),
  });
  for (const c of [noCert, otherCa]) c.start();
  expect(await readyWithin(noCert, 4000)).toBe(false);
  expect(await readyWithin(otherCa, 1000)).toBe(false);
  expect(noCert.health().why).toMatch(/etcd unreachable|not registered/);
  await Promise.all([noCert.close(), otherCa.close()]);
});
