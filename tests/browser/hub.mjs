// Helpers of the browser suite: start `twinhub serve` with its HTTPS gateway on a free loopback
// port, an official Azure IoT Node SDK device client trusting the hub's CA, and Debian's
// chromium driven headless by playwright-core (never a downloaded browser).

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const CHROMIUM = process.env.TWINHUB_CHROMIUM || '/usr/bin/chromium';

// Fail loudly, with the fix, when something is missing: a missing dependency is a failure.
async function need(name) {
  if (!existsSync(join(HERE, 'node_modules'))) {
    throw new Error('tests/browser/node_modules is missing: run `npm ci` in tests/browser first (scripts/setup.sh --tests does)');
  }
  const mod = await import(name);
  return mod.default ?? mod;
}
if (!existsSync(CHROMIUM)) {
  throw new Error(`${CHROMIUM} is missing: install Debian's chromium (scripts/setup.sh --tests)`);
}

export const { chromium } = await need('playwright-core');
const device = await need('azure-iot-device');
const deviceMqtt = await need('azure-iot-device-mqtt');
export const { Client, Message } = device;
export const { Mqtt } = deviceMqtt;

/** Reject with a clear message unless `promise` settles within `ms`. */
export function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Turn a node-style call into a promise: `call(cb => x.f(a, cb))`. */
export function call(fn) {
  return new Promise((resolve, reject) => {
    fn((err, res) => (err ? reject(err) : resolve(res)));
  });
}

async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer();
      s.listen(0, '127.0.0.1');
      await once(s, 'listening');
      servers.push(s);
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

const READY = 'twinhub: ready';
const live = new Set();
process.once('exit', () => {
  for (const child of live) child.kill('SIGTERM');
});

/** Start `twinhub serve` with the gateway on a free port; resolves once it is ready. */
export async function startHub() {
  const bin = process.env.TWINHUB_BIN;
  if (!bin || !existsSync(bin)) throw new Error('TWINHUB_BIN is not set to the built twinhub: run through `meson test --suite browser`');
  const dir = await mkdtemp(join(tmpdir(), 'twinhub-browser-'));
  let last;
  for (let attempt = 0; attempt < 3; attempt++) {
    const [mqttPort, mqttsPort, httpsPort] = await freePorts(3);
    const infoFile = join(dir, 'info.json');
    const args = ['serve', '--mqtt-port', String(mqttPort), '--mqtts-port', String(mqttsPort),
      '--https-port', String(httpsPort), '--cert-dir', join(dir, 'certs'), '--info-file', infoFile];
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    const out = { stdout: '', stderr: '' };
    child.stdout.setEncoding('utf8').on('data', (d) => { out.stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d) => { out.stderr += d; });
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => { live.delete(child); resolve({ code, signal }); }));
    const ready = new Promise((resolve) => {
      const check = () => { if (out.stdout.split('\n').some((l) => l.trim() === READY)) resolve('ready'); };
      child.stdout.on('data', check);
    });
    const outcome = await within(20000, Promise.race([ready, exited]), `'${READY}'`);
    if (outcome === 'ready') {
      const info = JSON.parse(await readFile(infoFile, 'utf8'));
      const ca = await readFile(info.caFile, 'utf8');
      return new Hub({ child, exited, out, dir, info, ca, httpsPort });
    }
    last = new Error(`twinhub serve exited (${JSON.stringify(outcome)})\n${out.stdout}\n${out.stderr}`);
  }
  await rm(dir, { recursive: true, force: true });
  throw last;
}

export class Hub {
  constructor(fields) {
    Object.assign(this, fields);
    this.clients = [];
  }

  get origin() {
    return new URL(this.info.dashboardUrl).origin;
  }

  /** The `  Dashboard` line of the banner. */
  get bannerLine() {
    return this.out.stdout.split('\n').find((l) => l.startsWith('  Dashboard'));
  }

  /** An official SDK device client (Mqtt over TLS, trusting the hub's CA); not yet opened. */
  async deviceClient(connectionString = this.info.deviceConnectionString) {
    const client = Client.fromConnectionString(connectionString, Mqtt);
    await client.setOptions({ ca: this.ca });
    this.clients.push(client);
    return client;
  }

  async stop() {
    await Promise.allSettled(this.clients.map((c) => within(5000, c.close(), 'client close')));
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    try {
      return await within(10000, this.exited, 'twinhub serve to exit');
    } finally {
      await rm(this.dir, { recursive: true, force: true });
    }
  }
}

/** Debian's chromium, headless (root in CI: no sandbox). */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
  });
}
