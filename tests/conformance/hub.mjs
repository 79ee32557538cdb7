// Shared helpers for the conformance suite: start and stop a `twinhub serve`
// per test file, drive it over the control API as a service principal, and
// build official Azure IoT SDK clients that trust the hub's generated CA.

import { spawn } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = dirname(fileURLToPath(import.meta.url));

// Fail loudly, with the fix, when the npm packages are not installed.
async function need(name) {
  if (!existsSync(join(HERE, 'node_modules'))) {
    throw new Error(`tests/conformance/node_modules is missing: run \`npm ci\` in tests/conformance first`);
  }
  try {
    const mod = await import(name);
    return mod.default ?? mod;
  } catch (err) {
    if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
      throw new Error(`npm package '${name}' is not installed: run \`npm ci\` in tests/conformance first`);
    }
    throw err;
  }
}

const device = await need('azure-iot-device');
const deviceMqtt = await need('azure-iot-device-mqtt');
export const mqtt = await need('mqtt');

export const { Client, ModuleClient, Message } = device;
export const { Mqtt } = deviceMqtt;

// ---------------------------------------------------------------- utilities

/** Reject with a clear message unless `promise` settles within `ms`. */
export function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The next emission of `event` on `emitter` for which `pred(...args)` holds. */
export function nextEvent(emitter, event, pred = () => true, ms = 10000) {
  let handler;
  const p = new Promise((resolve) => {
    handler = (...args) => {
      if (pred(...args)) resolve(args.length > 1 ? args : args[0]);
    };
    emitter.on(event, handler);
  });
  const result = within(ms, p, `'${event}'`).finally(() => emitter.removeListener(event, handler));
  result.catch(() => {}); // the awaiting test reports the failure; no unhandled rejection if it never awaits
  return result;
}

/** Turn a node-style call into a promise: `call(cb => x.f(a, cb))`. */
export function call(fn) {
  return new Promise((resolve, reject) => {
    fn((err, res) => (err ? reject(err) : resolve(res)));
  });
}

export function parseConnectionString(cs) {
  const out = {};
  for (const part of cs.split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

/** A SAS token as IoT Hub defines it (sr is signed exactly as sent). */
export function sasToken(resourceUri, keyBase64, policyName, ttlSeconds = 3600) {
  const sr = encodeURIComponent(resourceUri);
  const se = Math.floor(Date.now() / 1000) + ttlSeconds;
  const sig = createHmac('sha256', Buffer.from(keyBase64, 'base64'))
    .update(`${sr}\n${se}`)
    .digest('base64');
  let token = `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`;
  if (policyName) token += `&skn=${encodeURIComponent(policyName)}`;
  return token;
}

/** A fresh base64 key of 32 random bytes. */
export function newKey() {
  return Buffer.from(randomUUID() + randomUUID()).subarray(0, 32).toString('base64');
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

/** Resolves true when nothing listens on 127.0.0.1:port any more. */
export async function portIsFree(port) {
  const s = createServer();
  s.listen(port, '127.0.0.1');
  try {
    await Promise.race([once(s, 'listening'), once(s, 'error').then(([e]) => { throw e; })]);
    return true;
  } catch {
    return false;
  } finally {
    await new Promise((r) => s.close(() => r()));
  }
}

// ------------------------------------------------------------------ the hub

const READY = 'twinhub: ready';

// Hubs still running when this process exits (a crashed test file) are not left behind.
const live = new Set();
process.once('exit', () => {
  for (const child of live) child.kill('SIGTERM');
});

/**
 * Start `twinhub serve` on free loopback ports. Options: `registry` (path to a
 * registry JSON file), `httpsPort` (the HTTPS gateway's port; default 0, off),
 * `mqttPort: 0` (no plain MQTT listener), `mqttsPort` (the TLS port; default a free one).
 * Resolves to a Hub once it printed
 * `twinhub: ready`.
 */
export async function startHub(options = {}) {
  const bin = process.env.TWINHUB_BIN;
  if (!bin) {
    throw new Error('TWINHUB_BIN is not set: run through `meson test --suite conformance`, or set it to the built twinhub binary');
  }
  if (!existsSync(bin)) throw new Error(`TWINHUB_BIN=${bin} does not exist: build with ninja first`);
  const dir = await mkdtemp(join(tmpdir(), 'twinhub-conf-'));
  let lastError;
  // A port picked here can in theory be taken before the hub binds it: retry then.
  for (let attempt = 0; attempt < 3; attempt++) {
    const [mqttPort, freeTls] = await freePorts(2);
    const mqttsPort = options.mqttsPort ?? freeTls;
    try {
      return await launch(bin, dir, mqttPort, mqttsPort, options);
    } catch (err) {
      lastError = err;
      if (!err.exitedEarly) break;
    }
  }
  await rm(dir, { recursive: true, force: true });
  throw lastError;
}

async function launch(bin, dir, mqttPort, mqttsPort, options) {
  const infoFile = join(dir, `info-${mqttPort}.json`);
  const args = [
    'serve',
    '--mqtt-port', String(options.mqttPort === 0 ? 0 : mqttPort),
    '--mqtts-port', String(mqttsPort),
    '--cert-dir', join(dir, 'certs'),
    '--info-file', infoFile,
    // The HTTPS gateway (443 by default) only where a suite asks for it: see service.mjs.
    '--https-port', String(options.httpsPort ?? 0),
  ];
  if (options.registry) args.push('--registry', options.registry);
  // A debugging aid: the hub's own log (-v) in hub.out.stderr.
  if (process.env.TWINHUB_SERVE_VERBOSE) args.push('-v');
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  child.once('exit', () => live.delete(child));
  const out = { stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8').on('data', (d) => { out.stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { out.stderr += d; });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.once('error', (err) => { out.stderr += `\nspawn error: ${err.message}`; });

  const ready = new Promise((resolve) => {
    const check = () => {
      if (out.stdout.split('\n').some((l) => l.trim() === READY)) {
        child.stdout.off('data', check);
        resolve();
      }
    };
    child.stdout.on('data', check);
  });
  const outcome = await within(20000, Promise.race([
    ready.then(() => 'ready'),
    exited.then((st) => st),
  ]), `'${READY}' from ${bin} ${args.join(' ')}`).catch((err) => {
    child.kill('SIGKILL');
    err.message += `\nstdout:\n${out.stdout}\nstderr:\n${out.stderr}`;
    throw err;
  });
  if (outcome !== 'ready') {
    const err = new Error(`twinhub serve exited (code ${outcome.code}, signal ${outcome.signal}) before printing '${READY}'\n`
      + `command: ${bin} ${args.join(' ')}\nstdout:\n${out.stdout}\nstderr:\n${out.stderr}`);
    err.exitedEarly = true;
    throw err;
  }
  const info = JSON.parse(await readFile(infoFile, 'utf8'));
  const ca = await readFile(info.caFile, 'utf8');
  return new Hub({ child, exited, out, dir, info, ca, mqttPort, mqttsPort, args });
}

export class Hub {
  constructor(fields) {
    Object.assign(this, fields);
    this.clients = [];
    this.services = [];
  }

  /** Host name in the hub's connection strings (the SAS audience for devices). */
  get hostName() {
    return parseConnectionString(this.info.deviceConnectionString).HostName;
  }

  /** Connection string for any identity, dialling the hub's TLS listener. */
  connectionString(deviceId, key, moduleId) {
    let cs = `HostName=${this.hostName};DeviceId=${deviceId}`;
    if (moduleId) cs += `;ModuleId=${moduleId}`;
    return cs + `;SharedAccessKey=${key};GatewayHostName=127.0.0.1:${this.info.mqttsPort}`;
  }

  /** An official SDK device client (Mqtt over TLS, trusting the hub's CA); not yet opened. */
  async deviceClient(connectionString = this.info.deviceConnectionString) {
    const client = Client.fromConnectionString(connectionString, Mqtt);
    await client.setOptions({ ca: this.ca });
    this.clients.push(client);
    return client;
  }

  /** An official SDK module client; not yet opened. */
  async moduleClient(connectionString = this.info.moduleConnectionString) {
    const client = ModuleClient.fromConnectionString(connectionString, Mqtt);
    await client.setOptions({ ca: this.ca });
    this.clients.push(client);
    return client;
  }

  /** A connected service principal on the plain listener (control API + events). */
  async service() {
    const svc = new Service(this);
    await svc.connect();
    this.services.push(svc);
    return svc;
  }

  /** SIGTERM the hub; resolves to {code, signal}, or rejects if it does not stop in time. */
  async stop() {
    if (!this.stopped) {
      this.stopped = (async () => {
        await Promise.allSettled(this.clients.map((c) => within(5000, c.close(), 'client close')));
        await Promise.allSettled(this.services.map((s) => s.close()));
        if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
        try {
          return await within(10000, this.exited, 'twinhub serve to exit after SIGTERM');
        } catch (err) {
          this.child.kill('SIGKILL');
          throw err;
        } finally {
          await rm(this.dir, { recursive: true, force: true });
        }
      })();
    }
    return this.stopped;
  }
}

// ---------------------------------------------------- service principal

export class Service {
  constructor(hub) {
    this.hub = hub;
    this.events = [];
    this.pending = new Map();
    this.eventWaiters = new Set();
  }

  async connect() {
    const { info } = this.hub;
    const cs = parseConnectionString(info.serviceConnectionString);
    const client = mqtt.connect(`mqtt://127.0.0.1:${info.mqttPort}`, {
      protocolVersion: 4,
      clientId: `svc-${randomUUID().slice(0, 8)}`,
      username: info.hubName,
      password: sasToken(info.hubName, cs.SharedAccessKey, cs.SharedAccessKeyName),
      reconnectPeriod: 0,
      connectTimeout: 10000,
      clean: true,
    });
    this.client = client;
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    await within(10000, new Promise((resolve, reject) => {
      client.once('connect', resolve);
      client.once('error', reject);
      client.once('close', () => reject(new Error('service connection closed before CONNACK')));
    }), 'the service principal CONNACK');
    const granted = await client.subscribeAsync({
      '$CONTROL/twinhub/v1/response': { qos: 1 },
      '$twinhub/events/#': { qos: 1 },
    });
    for (const g of granted) {
      if (g.qos === 128) throw new Error(`service principal subscription to ${g.topic} was refused`);
    }
    client.on('close', () => {
      for (const p of this.pending.values()) p.reject(new Error('service connection closed'));
      this.pending.clear();
    });
  }

  onMessage(topic, payload) {
    let msg;
    try {
      msg = JSON.parse(payload.toString('utf8'));
    } catch {
      return;
    }
    if (topic === '$CONTROL/twinhub/v1/response') {
      for (const r of msg.responses ?? []) {
        const p = this.pending.get(r.correlationData);
        if (p) {
          this.pending.delete(r.correlationData);
          p.resolve(r);
        }
      }
    } else if (topic.startsWith('$twinhub/events/')) {
      msg.topic = topic;
      this.events.push(msg);
      for (const w of this.eventWaiters) w(msg);
    }
  }

  /** Send one control command; resolves to its response entry (data or error). */
  command(cmd, ms = 15000) {
    const correlationData = `c-${randomUUID()}`;
    const p = new Promise((resolve, reject) => this.pending.set(correlationData, { resolve, reject }));
    this.client.publish('$CONTROL/twinhub/v1', JSON.stringify({ commands: [{ ...cmd, correlationData }] }), { qos: 1 });
    return within(ms, p, `the answer to control command ${cmd.command}`)
      .finally(() => this.pending.delete(correlationData));
  }

  /** Like command(), but throws on an error answer and returns `data`. */
  async ok(cmd, ms) {
    const r = await this.command(cmd, ms);
    if (r.error !== undefined || r.data === undefined) {
      throw new Error(`control ${cmd.command} failed: ${JSON.stringify(r)}`);
    }
    return r.data;
  }

  /** Resolve with the first event record (already seen or future) matching pred. */
  waitEvent(pred, ms = 10000, what = 'a matching hub event') {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    let waiter;
    const p = new Promise((resolve) => {
      waiter = (ev) => { if (pred(ev)) resolve(ev); };
      this.eventWaiters.add(waiter);
    });
    return within(ms, p, what).finally(() => this.eventWaiters.delete(waiter));
  }

  async close() {
    if (this.client) await within(5000, this.client.endAsync(), 'service close').catch(() => this.client.end(true));
  }
}

// ------------------------------------------------ SDK subscription barriers
//
// The SDK subscribes in the background when a handler is added (onDeviceMethod,
// on('message'), twin.on('properties.desired')) and offers no public signal for
// when the SUBACK came back. Running its own idempotent enable step again
// resolves only after the subscription is in place, so a test can then trigger
// the cloud side without racing the subscription.

export function methodsSubscribed(client) {
  return within(10000, call((cb) => client._enableMethods(cb)), 'the SDK method subscription');
}

export function c2dSubscribed(client) {
  return within(10000, call((cb) => client._enableC2D(cb)), 'the SDK C2D subscription');
}

export function desiredSubscribed(twin) {
  return within(10000, call((cb) => twin.enableTwinDesiredPropertiesUpdates(cb)), 'the SDK desired-properties subscription');
}
