// Shared plumbing for the reference and deliberately wrong agents in this directory:
// loading the official Azure IoT Node SDK (installed once, in tests/conformance/node_modules),
// reading the environment `twinhub run` gives an agent (docs/scenarios.md, "The agent"),
// building a client over Mqtt/TLS, a fixed-delay retry policy, logging and shutdown.

import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));

// The SDK lives with the conformance suite; TWINHUB_NODE_MODULES may point elsewhere.
function sdkRequire() {
  const dir = process.env.TWINHUB_NODE_MODULES
    ? resolve(process.env.TWINHUB_NODE_MODULES)
    : join(HERE, '..', 'conformance', 'node_modules');
  if (!existsSync(join(dir, 'azure-iot-device'))) {
    fail(`the Azure IoT Node SDK is not installed in ${dir}: run \`npm ci\` in tests/conformance ` +
      '(or set TWINHUB_NODE_MODULES to a node_modules directory that has azure-iot-device and azure-iot-device-mqtt)');
  }
  return createRequire(join(dir, 'placeholder.js'));
}

const req = sdkRequire();
/** require() for the other SDK packages installed there (the provisioning ones). */
export const requireSdk = req;
export const device = req('azure-iot-device');
export const { Mqtt } = req('azure-iot-device-mqtt');
export const { Client, ModuleClient, Message } = device;

let agentName = 'agent';

export function setAgentName(name) {
  agentName = name;
}

export function log(...parts) {
  const text = parts.map((p) => (typeof p === 'string' ? p : JSON.stringify(p))).join(' ');
  process.stdout.write(`${new Date().toISOString()} ${agentName}: ${text}\n`);
}

export function fail(message) {
  process.stderr.write(`${agentName}: ${message}\n`);
  process.exit(2);
}

/** A positive number from the environment, or the default. */
export function envNumber(name, dflt) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) fail(`${name}=${raw} is not a positive number`);
  return n;
}

export function parseConnectionString(cs) {
  const out = {};
  for (const part of cs.split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

/** The connection string the runner hands the agent, and its parsed fields. */
export function connectionSettings() {
  const cs = process.env.TWINHUB_CONNECTION_STRING || process.env.IOTHUB_DEVICE_CONNECTION_STRING;
  if (!cs) fail('TWINHUB_CONNECTION_STRING is not set (run me through `twinhub run`, or set it to a device or module connection string)');
  const fields = parseConnectionString(cs);
  if (!fields.HostName || !fields.DeviceId || !fields.SharedAccessKey) {
    fail('TWINHUB_CONNECTION_STRING needs HostName, DeviceId and SharedAccessKey');
  }
  return { cs, fields };
}

/**
 * Every failed operation (including the reconnect after the hub dropped the
 * connection) is retried after a fixed delay. A fixed delay keeps the agent's
 * behaviour after a `disconnect` step predictable: it stays offline for that long.
 */
export function fixedDelayPolicy(delayMs) {
  return {
    shouldRetry: (err) => !(err && /Unauthorized/i.test(err.name || '')),
    nextRetryTimeout: () => delayMs,
  };
}

/** Apply the CA from TWINHUB_CA_FILE (NODE_EXTRA_CA_CERTS works on its own as well). */
export async function applyCa(client) {
  const caFile = process.env.TWINHUB_CA_FILE;
  if (caFile) await client.setOptions({ ca: readFileSync(caFile, 'utf8') });
}

/** Node-style call as a promise: call(cb => x.f(a, cb)). */
export function call(fn) {
  return new Promise((res, rej) => fn((err, val) => (err ? rej(err) : res(val))));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Run `stop` once on SIGTERM/SIGINT, then exit 0. */
export function onShutdown(stop) {
  let stopping = false;
  const handler = async (sig) => {
    if (stopping) return;
    stopping = true;
    log(`${sig}: closing`);
    const timer = setTimeout(() => process.exit(0), 2000);
    try {
      await stop();
    } catch (err) {
      log(`close failed: ${err.message}`);
    }
    clearTimeout(timer);
    process.exit(0);
  };
  process.on('SIGTERM', () => handler('SIGTERM'));
  process.on('SIGINT', () => handler('SIGINT'));
}

export function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
