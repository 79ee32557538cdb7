// X.509 client certificates (docs/protocol.md, "X.509 client certificates") with the official
// Azure IoT Node SDKs: azure-iot-device with `x509=true` connection strings and
// setOptions({cert, key}) over Mqtt (HostName:8883) and MqttWs (HostName:443), a device
// registered by thumbprint (selfSigned) and one signed by a CA the hub verified by proof of
// possession (certificateAuthority): telemetry, twin, direct method and C2D; each refusal
// (wrong thumbprint, expired certificate, CN that is not the device id, unverified CA);
// azure-iothub creating and reading X.509 devices. The SDK dials HostName itself for X.509
// (GatewayHostName is not read), so the hub listens on 8883 and 443 like the gateway suite.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import {
  Client, Message, Mqtt, c2dSubscribed, desiredSubscribed, methodsSubscribed, nextEvent, sasToken,
  within,
} from './hub.mjs';
import {
  GATEWAY_HOST, MqttWs, ServiceSdk, innerError, ownerKey, rest, startGatewayHub,
} from './service.mjs';

const T = { timeout: 90000 };
const run = promisify(execFile);
let hub;
let sdk;
let svc;
let dir;
let prints;
const CA_DEVICE = `x509-ca-${randomUUID().slice(0, 8)}`;

before(async () => {
  hub = await startGatewayHub({ mqttsPort: 8883 });
  sdk = await ServiceSdk.start(hub);
  svc = await hub.service();
  dir = await mkdtemp(join(tmpdir(), 'twinhub-x509-'));
  const out = await run(process.env.TWINHUB_X509_CERTS, [dir, CA_DEVICE]);
  prints = JSON.parse(out.stdout);
});

after(async () => {
  if (process.env.TWINHUB_SERVE_VERBOSE) process.stderr.write(hub.out.stderr);
  if (sdk) await sdk.close();
  if (hub) await hub.stop();
});

const pem = (name) => readFile(join(dir, `${name}.pem`), 'utf8');
const key = (name) => readFile(join(dir, `${name}.key`), 'utf8');
const twinhub = (...args) => run(process.env.TWINHUB_BIN, [...args, '--cert-dir', join(hub.dir, 'certs')]);

/** An SDK client for an X.509 device: HostName is where it dials (8883 or 443). */
async function x509Client(id, certName, Transport = Mqtt) {
  const client = Client.fromConnectionString(`HostName=${hub.hostName};DeviceId=${id};x509=true`,
    Transport);
  await client.setOptions({ cert: await pem(certName), key: await key(certName), ca: hub.ca });
  hub.clients.push(client);
  return client;
}

/** Telemetry (with the hub's auth method), twin reported and desired, a method, C2D. */
async function exercise(client, id) {
  await within(20000, client.open(), `Client.open() for ${id}`);
  const connected = await svc.waitEvent((e) => e.kind === 'connected' && e.deviceId === id,
    10000, 'the connected event');
  assert.equal(connected.data.auth, 'x509');

  const msg = new Message(JSON.stringify({ t: 1 }));
  msg.messageId = `m-${randomUUID().slice(0, 8)}`;
  await client.sendEvent(msg);
  const tel = await svc.waitEvent((e) => e.kind === 'telemetry' && e.deviceId === id
    && e.data.systemProperties.messageId === msg.messageId, 10000, 'the telemetry event');
  assert.equal(tel.data.systemProperties['iothub-connection-auth-method'],
    '{"scope":"device","type":"x509Certificate","issuer":"external","acceptingIpFilterRule":null}');

  const twin = await client.getTwin();
  const marker = randomUUID();
  await new Promise((resolve, reject) => {
    twin.properties.reported.update({ marker }, (e) => (e ? reject(e) : resolve()));
  });
  assert.equal((await sdk.registry('getTwin', id)).body.properties.reported.marker, marker);
  await desiredSubscribed(twin);
  const desired = nextEvent(twin, 'properties.desired', (d) => d.mode === marker, 15000);
  await sdk.registry('updateTwin', id, { properties: { desired: { mode: marker } } }, '*');
  assert.equal((await desired).mode, marker);

  client.onDeviceMethod('ping', (req, res) => res.send(200, { pong: req.payload }, () => {}));
  await methodsSubscribed(client);
  const r = await sdk.client('invokeDeviceMethod', id,
    { methodName: 'ping', payload: 3, responseTimeoutInSeconds: 10 });
  assert.deepEqual(r.body, { status: 200, payload: { pong: 3 } });

  const inbox = [];
  client.on('message', (m) => inbox.push(m));
  await c2dSubscribed(client);
  await svc.ok({ command: 'sendC2D', deviceId: id, body: 'to an x509 device', messageId: 'c1' });
  await within(10000, (async () => {
    while (!inbox.length) await new Promise((res) => setTimeout(res, 20));
  })(), 'the C2D message');
  assert.equal(inbox[0].data.toString(), 'to an x509 device');
  await client.close();
}

/** open() must fail, and the hub must log a refusal for `id` whose reason holds `why`. */
async function refused(client, id, why) {
  const since = svc.events.length;
  await assert.rejects(within(20000, client.open(), `Client.open() refused for ${id}`));
  const ev = await svc.waitEvent((e) => svc.events.indexOf(e) >= since && e.kind === 'refused'
    && e.deviceId === id, 10000, `the refused event for ${id}`);
  assert.match(ev.data.reason, why);
  await client.close().catch(() => {});
}

test('azure-iothub creates and reads X.509 devices (selfSigned and certificateAuthority)', T, async () => {
  const id = `x509-svc-${randomUUID().slice(0, 8)}`;
  await sdk.registry('create', {
    deviceId: id,
    authentication: {
      type: 'selfSigned',
      x509Thumbprint: { primaryThumbprint: prints.self.sha1, secondaryThumbprint: prints.self.sha256 },
    },
  });
  const got = await sdk.registry('get', id);
  assert.equal(got.body.authentication.type, 'selfSigned');
  assert.equal(got.body.authentication.x509Thumbprint.primaryThumbprint, prints.self.sha1);
  assert.equal(got.body.authentication.x509Thumbprint.secondaryThumbprint, prints.self.sha256);
  assert.equal(got.body.authentication.symmetricKey.primaryKey, null);
  await sdk.registry('create', { deviceId: CA_DEVICE, authentication: { type: 'certificateAuthority' } });
  assert.equal((await sdk.registry('get', CA_DEVICE)).body.authentication.type, 'certificateAuthority');
  await assert.rejects(sdk.registry('create', {
    deviceId: `x509-bad-${randomUUID().slice(0, 8)}`,
    authentication: { type: 'selfSigned', x509Thumbprint: { primaryThumbprint: 'not-hex' } },
  }));
});

test('a selfSigned device by thumbprint over Mqtt and MqttWs: telemetry, twin, method, C2D', T, async () => {
  const id = `x509-self-${randomUUID().slice(0, 8)}`;
  await sdk.registry('create', {
    deviceId: id,
    authentication: { type: 'selfSigned', x509Thumbprint: { primaryThumbprint: prints.self.sha256 } },
  });
  await exercise(await x509Client(id, 'self'), id);
  await exercise(await x509Client(id, 'self', MqttWs), id);
});

test('refusals: wrong thumbprint, expired certificate, a SAS device without its key', T, async () => {
  const id = `x509-ref-${randomUUID().slice(0, 8)}`;
  await sdk.registry('create', {
    deviceId: id,
    authentication: { type: 'selfSigned', x509Thumbprint: { primaryThumbprint: prints.expired.sha1 } },
  });
  await refused(await x509Client(id, 'self'), id, /thumbprint/);
  await refused(await x509Client(id, 'expired'), id, /expired/);
  await refused(await x509Client(id, 'expired', MqttWs), id, /expired/);
  const sas = `x509-sas-${randomUUID().slice(0, 8)}`;
  await sdk.registry('create', { deviceId: sas });
  await refused(await x509Client(sas, 'self'), sas, /'sas'/);
});

test('a certificateAuthority device: refused until its CA is verified, then Mqtt and MqttWs; wrong CN and unknown CA refused', T, async () => {
  // `twinhub cert` uploads the CA unverified; the device is refused, naming the CA.
  await twinhub('cert', 'upload', 'conformance-root', join(dir, 'ca.pem'));
  await refused(await x509Client(CA_DEVICE, 'leaf'), CA_DEVICE, /not verified/);
  // Proof of possession with the CA's key, as `az iot hub certificate verify` does.
  const verified = await twinhub('cert', 'verify', 'conformance-root', '--ca-key', join(dir, 'ca.key'));
  assert.match(verified.stdout, /verified\s+yes/);
  await exercise(await x509Client(CA_DEVICE, 'leaf'), CA_DEVICE);
  await exercise(await x509Client(CA_DEVICE, 'leaf', MqttWs), CA_DEVICE);
  await refused(await x509Client(CA_DEVICE, 'wrongcn'), CA_DEVICE, /is not the device id/);
  await refused(await x509Client(CA_DEVICE, 'foreign'), CA_DEVICE, /does not chain/);
});

test('a SAS device on the same port 8883 is unchanged', T, async () => {
  const id = `x509-plain-${randomUUID().slice(0, 8)}`;
  const res = await sdk.registry('create', { deviceId: id });
  const cs = `HostName=${hub.hostName};DeviceId=${id};SharedAccessKey=${res.body.authentication.symmetricKey.primaryKey}`;
  const client = await hub.deviceClient(cs);
  await within(20000, client.open(), 'a SAS device on 8883');
  const ev = await svc.waitEvent((e) => e.kind === 'connected' && e.deviceId === id, 10000,
    'the connected event');
  assert.equal(ev.data.auth, 'sas');
  await client.close();
  assert.ok(ownerKey(hub));
});

test('the CA certificate resource at /certificates in the ARM shapes, with If-Match', T, async () => {
  const auth = { Authorization: sasToken(GATEWAY_HOST, ownerKey(hub), 'iothubowner') };
  const json = { ...auth, 'Content-Type': 'application/json' };
  const q = '?api-version=2021-07-02';
  const certificate = await pem('ca');
  const put = await rest(hub, 'PUT', `/certificates/rest-root${q}`, {
    headers: json, body: JSON.stringify({ properties: { certificate } }),
  });
  assert.equal(put.status, 200, put.text);
  assert.equal(put.json.name, 'rest-root');
  assert.equal(put.json.properties.isVerified, false);
  assert.equal(put.json.properties.subject, 'CN=x509-conformance-root');
  assert.match(put.json.properties.thumbprint, /^[0-9A-F]{40}$/);
  assert.equal(put.json.properties.certificate, certificate);
  const list = await rest(hub, 'GET', `/certificates${q}`, { headers: auth });
  assert.ok(list.json.value.some((c) => c.name === 'rest-root'), list.text);
  const got = await rest(hub, 'GET', `/certificates/rest-root${q}`, { headers: auth });
  assert.equal(got.status, 200);
  assert.equal(got.headers.etag.replace(/"/g, ''), got.json.etag);

  // generateVerificationCode and verify need If-Match; a stale one is 412.
  const noMatch = await rest(hub, 'POST', `/certificates/rest-root/generateVerificationCode${q}`,
    { headers: auth });
  assert.equal(noMatch.status, 400, noMatch.text);
  const stale = await rest(hub, 'POST', `/certificates/rest-root/generateVerificationCode${q}`,
    { headers: { ...auth, 'If-Match': '"c3RhbGU="' } });
  assert.equal(stale.status, 412, stale.text);
  const code = await rest(hub, 'POST', `/certificates/rest-root/generateVerificationCode${q}`,
    { headers: { ...auth, 'If-Match': got.json.etag } });
  assert.equal(code.status, 200, code.text);
  assert.match(code.json.properties.verificationCode, /^[0-9A-F]{48}$/);
  // A certificate that is not the proof (its CN is not the code) is refused with the reason.
  const wrong = await rest(hub, 'POST', `/certificates/rest-root/verify${q}`, {
    headers: { ...json, 'If-Match': '*' }, body: JSON.stringify({ certificate: await pem('leaf') }),
  });
  assert.equal(wrong.status, 400, wrong.text);
  assert.match(innerError(wrong).message, /verification code/);
  // Unknown name, then delete.
  assert.equal((await rest(hub, 'GET', `/certificates/nope${q}`, { headers: auth })).status, 404);
  const del = await rest(hub, 'DELETE', `/certificates/rest-root${q}`,
    { headers: { ...auth, 'If-Match': '*' } });
  assert.equal(del.status, 204, del.text);
  assert.equal((await rest(hub, 'GET', `/certificates/rest-root${q}`, { headers: auth })).status, 404);
});
