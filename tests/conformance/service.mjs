// Helpers for the HTTPS gateway suite (service.test.mjs): a hub whose gateway listens on
// 127.0.0.1:443, the official service SDK in a child process that trusts the hub's CA
// (fixtures/service-worker.mjs), raw HTTPS requests, and device clients over MQTT/WebSockets.
//
// The Azure SDKs dial 443 and nothing else (real-clients.md 2.1, 3.1), so this suite needs
// that port: root, or the cap_net_bind_service capability, or a lowered
// net.ipv4.ip_unprivileged_port_start. Without it the suite fails and says so.

import { fork } from 'node:child_process';
import https from 'node:https';
import { join } from 'node:path';
import { Client, HERE, ModuleClient, parseConnectionString, startHub, within } from './hub.mjs';

const deviceMqtt = (await import('azure-iot-device-mqtt')).default;
export const { MqttWs } = deviceMqtt;

/** Where the SDKs dial: a name in the server certificate, on the port they hard-code. */
export const GATEWAY_HOST = 'localhost';
export const HTTPS_PORT = 443;

/** startHub with the gateway on 443; fails with what to do when 443 cannot be bound. */
export async function startGatewayHub(options = {}) {
  try {
    return await startHub({ ...options, httpsPort: HTTPS_PORT });
  } catch (err) {
    err.message = `this suite needs 127.0.0.1:${HTTPS_PORT}, the port the Azure SDKs dial: run `
      + 'it as root (as CI does), or give the built twinhub cap_net_bind_service, or lower '
      + 'net.ipv4.ip_unprivileged_port_start, and make sure nothing else listens there. '
      + `twinhub serve said:\n${err.message}`;
    throw err;
  }
}

/** The owner policy's key and a REST connection string for the service SDK. */
export function serviceConnectionString(hub) {
  const cs = parseConnectionString(hub.info.serviceConnectionString);
  return `HostName=${GATEWAY_HOST};SharedAccessKeyName=${cs.SharedAccessKeyName};SharedAccessKey=${cs.SharedAccessKey}`;
}

export function ownerKey(hub) {
  return parseConnectionString(hub.info.serviceConnectionString).SharedAccessKey;
}

/** Thrown for an SDK call that failed in the worker; carries the SDK error's class name. */
export class SdkError extends Error {
  constructor(e) {
    super(`${e.name}: ${e.message}`);
    this.sdkName = e.name;
    this.status = e.status;
    this.body = e.body;
  }
}

/** The service SDK in a child process trusting the hub's CA; `cs` defaults to serviceConnectionString. */
export class ServiceSdk {
  static async start(hub, cs = serviceConnectionString(hub)) {
    const sdk = new ServiceSdk();
    sdk.child = fork(join(HERE, 'fixtures', 'service-worker.mjs'), [], {
      env: {
        ...process.env,
        NODE_EXTRA_CA_CERTS: hub.info.caFile,
        TWINHUB_SERVICE_CS: cs,
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    sdk.pending = new Map();
    sdk.next = 1;
    const ready = new Promise((resolve, reject) => {
      sdk.child.once('error', reject);
      sdk.child.once('exit', (code) => reject(new Error(`service worker exited with code ${code}`)));
      sdk.child.on('message', (m) => {
        if (m.ready) return resolve();
        const p = sdk.pending.get(m.id);
        if (!p) return;
        sdk.pending.delete(m.id);
        if (m.ok) p.resolve(m.value);
        else p.reject(new SdkError(m.error));
      });
    });
    await within(15000, ready, 'the service SDK worker to start');
    sdk.child.on('exit', () => {
      for (const p of sdk.pending.values()) p.reject(new Error('the service SDK worker exited'));
      sdk.pending.clear();
    });
    return sdk;
  }

  /** One SDK call: resolves to {body, status, etag}; rejects with SdkError. */
  call(target, method, ...args) {
    const id = this.next++;
    const p = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.child.send({ id, target, method, args });
    return within(60000, p, `the SDK call ${target}.${method}`);
  }

  registry(method, ...args) {
    return this.call('registry', method, ...args);
  }

  client(method, ...args) {
    return this.call('client', method, ...args);
  }

  /** A JobClient call (scheduleTwinUpdate, scheduleDeviceMethod, getJob, cancelJob). */
  jobs(method, ...args) {
    return this.call('jobs', method, ...args);
  }

  /** Every page of createQuery(sql, pageSize).nextAsTwin(). */
  query(sql, pageSize) {
    return this.call('registry', 'query', sql, pageSize);
  }

  async close() {
    if (this.child && this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.disconnect();
      await within(5000, exited, 'the service SDK worker to exit').catch(() => this.child.kill('SIGKILL'));
    }
  }
}

/**
 * A raw HTTPS request to the gateway. Resolves to {status, headers, text, json}
 * (json is undefined when the body is not JSON).
 */
export function rest(hub, method, path, { headers = {}, body } = {}) {
  return within(30000, new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1',
      servername: GATEWAY_HOST,
      port: HTTPS_PORT,
      method,
      path,
      headers: body === undefined ? headers : { 'Content-Length': Buffer.byteLength(body), ...headers },
      ca: hub.ca,
      agent: false,
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  }), `${method} ${path}`);
}

/** The inner error record of the hub's error body ({"Message":"<json>"}). */
export function innerError(res) {
  return JSON.parse(res.json.Message);
}

/** An SDK device (or module) client over MQTT/WebSockets through the gateway; not yet opened. */
export async function wsClient(hub, deviceId, key, moduleId) {
  let cs = `HostName=${hub.hostName};DeviceId=${deviceId}`;
  if (moduleId) cs += `;ModuleId=${moduleId}`;
  cs += `;SharedAccessKey=${key};GatewayHostName=${GATEWAY_HOST}`;
  const client = (moduleId ? ModuleClient : Client).fromConnectionString(cs, MqttWs);
  await client.setOptions({ ca: hub.ca });
  hub.clients.push(client);
  return client;
}
