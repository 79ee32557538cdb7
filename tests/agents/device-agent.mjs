// A generic device agent implementing the device-agent contract of scenarios/README.md
// with the official Azure IoT Node SDK (azure-iot-device Client, azure-iot-device-mqtt Mqtt,
// TLS). device-agent-ref.mjs runs it as specified; device-agent-wrong.mjs runs it with
// two deliberate defects switched on.
//
// Environment: TWINHUB_CONNECTION_STRING (or IOTHUB_DEVICE_CONNECTION_STRING), TWINHUB_CA_FILE
// and/or NODE_EXTRA_CA_CERTS, and optionally
//   DEVICE_AGENT_RECONNECT_DELAY  seconds offline after a lost connection (default 2)
//   DEVICE_AGENT_DEFAULT_INTERVAL telemetry period in seconds while no desired value is set (default 10)

import { randomUUID } from 'node:crypto';
import {
  Client, Message, Mqtt, applyCa, call, connectionSettings, envNumber, isPlainObject, log,
  onShutdown, setAgentName, sleep,
} from './common.mjs';

export const AGENT_VERSION = '1.0.0';

/**
 * The writable properties the agent supports: how to validate a desired value
 * (return an error sentence, or null when it is acceptable) and the default
 * used while the property is absent.
 */
const WRITABLE = {
  telemetryInterval: {
    dflt: () => envNumber('DEVICE_AGENT_DEFAULT_INTERVAL', 10),
    check: (v) => (Number.isInteger(v) && v >= 1 && v <= 3600
      ? null : 'telemetryInterval must be an integer number of seconds between 1 and 3600'),
  },
  label: {
    dflt: () => '',
    check: (v) => (typeof v === 'string' && v.length <= 64 ? null : 'label must be a string of at most 64 characters'),
  },
};

/**
 * options.reconcileOnReconnect (default true): read the twin again after every
 *   reconnection and apply what changed while offline.
 * options.ackVersion (default true): acknowledgements carry "av".
 */
export async function runDeviceAgent(options = {}) {
  const opts = { reconcileOnReconnect: true, ackVersion: true, name: 'device-agent', ...options };
  setAgentName(opts.name);
  const { cs, fields } = connectionSettings();
  if (fields.ModuleId) log('note: a module connection string; the agent runs as that module');
  const reconnectDelayMs = envNumber('DEVICE_AGENT_RECONNECT_DELAY', 2) * 1000;

  // Effective values of the writable properties, and the desired value each was
  // last reconciled against (JSON text; undefined = never seen).
  const effective = {};
  const seen = {};
  for (const [k, spec] of Object.entries(WRITABLE)) effective[k] = spec.dflt();

  let client = null;
  let twin = null;
  let seq = 0;
  let sent = 0;
  let telemetryTimer = null;
  let closing = false;
  // Never let the SDK retry or reconnect by itself (see newSession).
  const noRetryPolicy = { shouldRetry: () => false, nextRetryTimeout: () => 0 };

  const report = async (patch) => {
    if (!twin) return;
    try {
      await call((cb) => twin.properties.reported.update(patch, cb));
      log('reported', patch);
    } catch (err) {
      log(`reported patch failed: ${err.message}`);
    }
  };

  const ack = (name, value, ac, av, ad) => {
    const body = { value, ac, av, ad };
    if (!opts.ackVersion) delete body.av;
    return body;
  };

  // Bring the effective values in line with the full desired document.
  const reconcile = async (desired, why) => {
    // No $version: the SDK's cached copy is being refreshed by a GET; its events follow.
    if (!desired || !Number.isInteger(desired.$version)) return;
    const version = desired.$version;
    const patch = {};
    for (const [name, spec] of Object.entries(WRITABLE)) {
      const present = Object.prototype.hasOwnProperty.call(desired, name) && desired[name] !== null;
      const text = present ? JSON.stringify(desired[name]) : '<absent>';
      if (seen[name] === text) continue;
      const first = seen[name] === undefined;
      seen[name] = text;
      if (!present) {
        effective[name] = spec.dflt();
        patch[name] = first
          ? ack(name, effective[name], 203, 0, 'default')
          : ack(name, effective[name], 200, version, 'reset to default');
        continue;
      }
      const problem = spec.check(desired[name]);
      if (problem) {
        patch[name] = ack(name, effective[name], 400, version, problem);
      } else {
        effective[name] = desired[name];
        patch[name] = ack(name, effective[name], 200, version, 'applied');
      }
    }
    if (Object.keys(patch).length === 0) return;
    log(`reconcile (${why}) at desired $version ${version}`);
    if ('telemetryInterval' in patch) scheduleTelemetry();
    await report(patch);
  };

  const sendTelemetry = async (body, props = {}, extra = {}) => {
    if (!client) throw new Error('not connected');
    const msg = new Message(JSON.stringify(body));
    msg.messageId = randomUUID();
    msg.contentType = 'application/json';
    msg.contentEncoding = 'utf-8';
    if (extra.correlationId) msg.correlationId = extra.correlationId;
    for (const [k, v] of Object.entries(props)) msg.properties.add(k, v);
    await client.sendEvent(msg);
    sent += 1;
    return msg.messageId;
  };

  const reading = () => {
    seq += 1;
    return { seq, temperature: Math.round((20 + 5 * Math.sin(seq / 5)) * 10) / 10, label: effective.label };
  };

  function scheduleTelemetry() {
    if (telemetryTimer) clearTimeout(telemetryTimer);
    telemetryTimer = setTimeout(async () => {
      telemetryTimer = null;
      if (closing) return;
      try {
        const id = await sendTelemetry(reading(), { type: 'reading' });
        log(`telemetry ${id}`);
      } catch (err) {
        log(`telemetry failed: ${err.message}`);
      }
      if (!closing && !telemetryTimer) scheduleTelemetry();
    }, effective.telemetryInterval * 1000);
  }

  // ---- direct methods (names not listed here get no answer: the SDK ignores them)
  const methods = {
    echo: async (payload) => [200, payload === undefined ? null : payload],
    getStatus: async () => [200, {
      status: 'running', agentVersion: AGENT_VERSION, telemetryInterval: effective.telemetryInterval,
      label: effective.label, messagesSent: sent,
    }],
    sendNow: async (payload) => {
      if (payload !== null && payload !== undefined && !isPlainObject(payload)) {
        return [400, { error: 'sendNow takes an object or no payload' }];
      }
      const messageId = await sendTelemetry(reading(), { type: 'reading', trigger: 'method' });
      return [200, { messageId }];
    },
  };

  // ---- one client per connection. The SDK would reconnect on its own at once; the agent
  // instead drops the client, waits reconnectDelayMs and starts a new session, which
  // subscribes to everything again and (reference behaviour) reads the twin afresh.
  const newSession = async (first) => {
    const c = Client.fromConnectionString(cs, Mqtt);
    c.setRetryPolicy(noRetryPolicy);
    await applyCa(c);
    c.on('error', (err) => log(`client error: ${err.message}`));
    for (const [name, fn] of Object.entries(methods)) {
      c.onDeviceMethod(name, async (request, response) => {
        let status;
        let body;
        try {
          [status, body] = await fn(request.payload);
        } catch (err) {
          [status, body] = [500, { error: err.message }];
        }
        log(`method ${name} -> ${status}`);
        response.send(status, body, (err) => { if (err) log(`method response failed: ${err.message}`); });
      });
    }
    // Messages queued while the device was offline arrive as soon as open() subscribes, before
    // open() resolves and this client becomes `client`: acknowledge once it has.
    let opened;
    const openedP = new Promise((resolve) => { opened = resolve; });
    // Cloud-to-device messages: acknowledged with a telemetry message.
    c.on('message', async (msg) => {
      await openedP;
      const props = {};
      for (const p of msg.properties?.propertyList ?? []) props[p.key] = p.value;
      const text = msg.data === undefined ? '' : Buffer.from(msg.data).toString('utf8');
      log(`c2d ${msg.messageId}`);
      try {
        await sendTelemetry({ messageId: msg.messageId ?? null, body: text, properties: props },
          { type: 'c2dAck' }, { correlationId: msg.messageId });
      } catch (err) {
        log(`c2d ack failed: ${err.message}`);
      }
      c.complete(msg, () => {});
    });
    c.on('disconnect', () => {
      if (client !== c || closing) return;
      log('disconnected');
      client = null;
      c.removeAllListeners('disconnect');
      c.close().catch(() => {});
      reconnect();
    });

    await c.open();
    client = c;
    opened();
    // Subscribe to desired patches first, then read the twin (a second GET once the
    // subscription is in place), so that no patch falls between the two.
    const t = await c.getTwin();
    twin = t;
    // The wrong agent ignores, after a reconnection, everything but patches newer than
    // the twin it reads now (baseline); the reference agent looks at everything (-1).
    let baseline = !first && !opts.reconcileOnReconnect ? Infinity : -1;
    t.on('properties.desired', (delta) => {
      if (client !== c) return;
      if (baseline >= 0 && !(Number.isInteger(delta?.$version) && delta.$version > baseline)) return;
      reconcile(t.properties.desired, 'patch').catch((err) => log(`reconcile failed: ${err.message}`));
    });
    twin = await c.getTwin();
    log(first ? `connected as ${fields.DeviceId}` : 'reconnected');
    if (first) {
      await report({ agentVersion: AGENT_VERSION, startedAt: new Date().toISOString(), status: 'running' });
    }
    if (first || opts.reconcileOnReconnect) {
      await reconcile(twin.properties.desired, first ? 'start' : 'reconnected');
    } else {
      baseline = Number.isInteger(twin.properties.desired.$version) ? twin.properties.desired.$version : 0;
    }
  };

  const reconnect = async () => {
    while (!closing) {
      await sleep(reconnectDelayMs);
      try {
        await newSession(false);
        return;
      } catch (err) {
        log(`reconnect failed: ${err.message}`);
        if (client) { const c = client; client = null; c.close().catch(() => {}); }
      }
    }
  };

  onShutdown(async () => {
    closing = true;
    if (telemetryTimer) clearTimeout(telemetryTimer);
    if (client) await client.close();
  });

  // ---- start
  for (;;) {
    try {
      await newSession(true);
      break;
    } catch (err) {
      log(`start failed: ${err.message}; retrying`);
      if (client) { const c = client; client = null; c.close().catch(() => {}); }
      await sleep(reconnectDelayMs);
    }
  }
  scheduleTelemetry();
}
