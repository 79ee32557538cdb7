// The provisioning service over HTTPS on the gateway (docs/dps.md) with the official Node
// SDKs: azure-iot-provisioning-device-http registers (it always dials provisioningHost:443)
// an individual enrollment and a group member, the device then reads its initial twin at the
// assignedHub; refusals are 4xx with a JSON body (the SDK parses an error body only with
// Content-Type application/json); azure-iot-provisioning-service creates, reads, lists,
// updates and deletes enrollments and groups (it dials HostName:443, api-version 2021-10-01).
// X.509 attestation (docs/dps.md, "X.509 attestation") with azure-iot-security-x509: an
// individual enrollment registers over HTTPS (the client certificate on 443, no Authorization
// header) and over MQTT on the TLS port, the device then connects to its assignedHub with
// `x509=true` (MqttWs, which dials HostName:443) and sends a message; a certificate whose CN is
// not the registration id, or that is not the enrolled one, is refused with 401 (UnauthorizedError).
// Needs port 443, like service.test.mjs: run under `flock /tmp/twinhub-443.lock`.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { Client, Message, Mqtt, newKey, within } from './hub.mjs';
import { MqttWs, startGatewayHub } from './service.mjs';
import { deriveKey, enroll, register, worker } from './dps.mjs';

const T = { timeout: 60000 };
let hub;
let svc;

before(async () => {
  hub = await startGatewayHub();
  svc = await hub.service();
});

after(async () => {
  if (hub) await hub.stop();
});

const unique = (p) => `${p}-${randomUUID().slice(0, 8)}`;
const host = () => hub.info.provisioningHost;

async function twinOf(state, key) {
  const cs = `HostName=${state.assignedHub};DeviceId=${state.deviceId};SharedAccessKey=${key}`
    + `;GatewayHostName=127.0.0.1:${hub.info.mqttsPort}`;
  const client = Client.fromConnectionString(cs, Mqtt);
  await client.setOptions({ ca: hub.ca });
  hub.clients.push(client);
  await within(15000, client.open(), 'the device to connect to the assigned hub');
  return (await within(15000, client.getTwin(), 'the twin')).properties.desired;
}

/** A raw HTTPS request to the gateway: {status, headers, body}. */
function raw(method, path, headers = {}, body) {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port: hub.info.httpsPort, method, path, ca: hub.ca,
      headers: { 'content-type': 'application/json', ...headers },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d) => { text += d; }).on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

test('an individual enrollment registers over HTTPS and the device reads its initial twin', T, async () => {
  const rid = unique('http-ind');
  const key = newKey();
  await enroll(svc, 'enrollments', rid, {
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key } },
    initialTwin: { properties: { desired: { rate: 3 } } },
  });
  const res = await register(hub, { transport: 'http', host: host(), registrationId: rid, key, payload: { a: 1 } });
  assert.ok(res.ok, JSON.stringify(res.error));
  assert.equal(res.value.status, 'assigned');
  assert.equal(res.value.assignedHub, hub.info.hubName);
  assert.deepEqual(res.value.payload, { a: 1 });
  assert.equal((await twinOf(res.value, key)).rate, 3);
  const ev = await svc.waitEvent((e) => e.kind === 'registration' && e.data?.registrationId === rid);
  assert.equal(ev.data.transport, 'https');
});

test('a group member registers over HTTPS with the derived key', T, async () => {
  const group = unique('http-grp');
  const groupKey = newKey();
  await enroll(svc, 'enrollmentGroups', group, {
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupKey } },
    initialTwin: { properties: { desired: { mode: 'g' } } },
  });
  const rid = unique('http-member');
  const key = deriveKey(groupKey, rid);
  const res = await register(hub, { transport: 'http', host: host(), registrationId: rid, key });
  assert.ok(res.ok, JSON.stringify(res.error));
  assert.equal((await twinOf(res.value, key)).mode, 'g');
});

test('a disabled enrollment and a wrong key are refused over HTTPS with 401 and a JSON body', T, async () => {
  const rid = unique('http-off');
  const key = newKey();
  await enroll(svc, 'enrollments', rid, {
    provisioningStatus: 'disabled', attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key } },
  });
  let res = await register(hub, { transport: 'http', host: host(), registrationId: rid, key });
  assert.equal(res.ok, false);
  assert.equal(res.error.name, 'UnauthorizedError', JSON.stringify(res.error));
  res = await register(hub, { transport: 'http', host: host(), registrationId: rid, key: newKey() });
  assert.equal(res.error.name, 'UnauthorizedError', JSON.stringify(res.error));

  // What the SDK relies on: the status and a JSON body with that content type.
  const r = await raw('PUT', `/${hub.info.idScope}/registrations/${rid}/register?api-version=2019-03-31`,
    { authorization: 'SharedAccessSignature sr=x&sig=y&se=1&skn=registration' }, { registrationId: rid });
  assert.equal(r.status, 401);
  assert.match(r.headers['content-type'], /^application\/json/);
  const body = JSON.parse(r.body);
  assert.equal(body.errorCode, 401002);
  assert.ok(body.trackingId && body.message && body.timestampUtc);
});

test('the provisioning service SDK creates, reads, lists, updates and deletes enrollments and groups', T, async () => {
  const cs = hub.info.provisioningServiceConnectionString;
  assert.match(cs, /SharedAccessKeyName=provisioningserviceowner/);
  const id = unique('svc-ind');
  const gid = unique('svc-grp');
  const res = await worker(hub, {
    op: 'service',
    cs,
    calls: [
      { method: 'createOrUpdateIndividualEnrollment', args: [{ registrationId: id, deviceId: `${id}-dev`, attestation: { type: 'symmetricKey' }, initialTwin: { tags: { t: 1 } } }] },
      { method: 'getIndividualEnrollment', args: [id] },
      { method: 'createOrUpdateEnrollmentGroup', args: [{ enrollmentGroupId: gid, attestation: { type: 'symmetricKey' }, provisioningStatus: 'disabled' }] },
      { method: 'getEnrollmentGroup', args: [gid] },
      { method: 'queryAll', args: ['individual', { query: '*' }, 1] },
      { method: 'queryAll', args: ['groups', { query: '*' }, 10] },
    ],
  });
  assert.ok(res.ok, JSON.stringify(res.error));
  const [created, got, group, gotGroup, list, groups] = res.value;
  assert.equal(created.registrationId, id);
  assert.equal(created.deviceId, `${id}-dev`);
  assert.ok(created.attestation.symmetricKey.primaryKey, 'keys are generated');
  assert.equal(got.etag, created.etag);
  assert.equal(group.provisioningStatus, 'disabled');
  assert.equal(gotGroup.enrollmentGroupId, gid);
  assert.ok(list.items.some((e) => e.registrationId === id));
  assert.ok(list.pages >= 1);
  assert.ok(groups.items.some((g) => g.enrollmentGroupId === gid));

  // Update with the etag read, then delete both; a read afterwards is 404.
  const upd = await worker(hub, {
    op: 'service',
    cs,
    calls: [
      { method: 'createOrUpdateIndividualEnrollment', args: [{ ...got, provisioningStatus: 'disabled' }] },
      { method: 'deleteIndividualEnrollment', args: [id] },
      { method: 'deleteEnrollmentGroup', args: [gid] },
    ],
  });
  assert.ok(upd.ok, JSON.stringify(upd.error));
  assert.equal(upd.value[0].provisioningStatus, 'disabled');
  assert.notEqual(upd.value[0].etag, got.etag);
  const gone = await worker(hub, { op: 'service', cs, calls: [{ method: 'getIndividualEnrollment', args: [id] }] });
  assert.equal(gone.ok, false);
  assert.equal(gone.error.status ?? 404, 404, JSON.stringify(gone.error));

  // A stale etag is 412; a token of another key is 401.
  const stale = await worker(hub, { op: 'service', cs, calls: [
    { method: 'createOrUpdateEnrollmentGroup', args: [{ enrollmentGroupId: gid, attestation: { type: 'symmetricKey' } }] },
    { method: 'createOrUpdateEnrollmentGroup', args: [{ enrollmentGroupId: gid, attestation: { type: 'symmetricKey' }, etag: 'bm9wZQ==' }] },
  ] });
  assert.equal(stale.ok, false);
  const bad = await worker(hub, { op: 'service', cs: cs.replace(/SharedAccessKey=[^;]+/, `SharedAccessKey=${newKey()}`), calls: [{ method: 'getEnrollmentGroup', args: [gid] }] });
  assert.equal(bad.ok, false);
});

/** Certificates from the x509-certs helper (x509_certs.c) for CN `cn`: {pem(name), key(name)}. */
async function certsFor(cn) {
  const dir = await mkdtemp(join(tmpdir(), 'twinhub-dps-x509-'));
  await promisify(execFile)(process.env.TWINHUB_X509_CERTS, [dir, cn]);
  return {
    pem: (name) => readFile(join(dir, `${name}.pem`), 'utf8'),
    key: (name) => readFile(join(dir, `${name}.key`), 'utf8'),
  };
}

/** An individual X.509 enrollment of `rid` whose primary certificate is the helper's leaf (CN = rid). */
async function enrollX509(rid) {
  const certs = await certsFor(rid);
  await enroll(svc, 'enrollments', rid, {
    attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: await certs.pem('leaf') } } } },
    initialTwin: { properties: { desired: { x509: true } } },
  });
  return certs;
}

const registerX509 = async (certs, name, opts) => register(hub, {
  ...opts, registrationId: opts.registrationId, cert: await certs.pem(name), certKey: await certs.key(name),
});

/** The registered device connects to its assignedHub with x509=true and sends one message. */
async function sendAsX509(state, certs) {
  // The SDK dials HostName itself for X.509 (GatewayHostName is not read); MqttWs dials 443.
  const client = Client.fromConnectionString(`HostName=${state.assignedHub};DeviceId=${state.deviceId};x509=true`, MqttWs);
  await client.setOptions({ cert: await certs.pem('leaf'), key: await certs.key('leaf'), ca: hub.ca });
  hub.clients.push(client);
  await within(20000, client.open(), 'the X.509 device to connect to the assigned hub');
  const msg = new Message(JSON.stringify({ x509: 1 }));
  msg.messageId = `m-${randomUUID().slice(0, 8)}`;
  await within(15000, client.sendEvent(msg), 'sendEvent');
  const tel = await svc.waitEvent((e) => e.kind === 'telemetry' && e.deviceId === state.deviceId
    && e.data.systemProperties.messageId === msg.messageId, 10000, 'the telemetry event');
  assert.match(tel.data.systemProperties['iothub-connection-auth-method'], /"type":"x509Certificate"/);
  const twin = await within(15000, client.getTwin(), 'the twin');
  assert.equal(twin.properties.desired.x509, true);
  await client.close();
}

test('an individual X.509 enrollment registers over HTTPS with azure-iot-security-x509 and the device sends with x509=true', T, async () => {
  const rid = unique('http-x509');
  const certs = await enrollX509(rid);
  const res = await registerX509(certs, 'leaf', { transport: 'http', host: host(), registrationId: rid });
  assert.ok(res.ok, JSON.stringify(res.error));
  assert.equal(res.value.status, 'assigned');
  assert.equal(res.value.assignedHub, hub.info.hubName);
  assert.equal(res.value.deviceId, rid);
  const ev = await svc.waitEvent((e) => e.kind === 'registration' && e.data?.registrationId === rid);
  assert.equal(ev.data.transport, 'https');
  await sendAsX509(res.value, certs);
});

test('an individual X.509 enrollment registers over MQTT on the TLS port with azure-iot-security-x509', T, async () => {
  const rid = unique('mqtt-x509');
  const certs = await enrollX509(rid);
  const res = await registerX509(certs, 'leaf', { transport: 'mqtt', host: `127.0.0.1:${hub.info.mqttsPort}`, registrationId: rid });
  assert.ok(res.ok, JSON.stringify(res.error));
  assert.equal(res.value.status, 'assigned');
  assert.equal(res.value.deviceId, rid);
  await sendAsX509(res.value, certs);
});

test('an X.509 registration with a CN that is not the registration id, or a certificate not enrolled, is refused with 401 over HTTPS', T, async () => {
  const rid = unique('http-x509-bad');
  const certs = await enrollX509(rid);
  // wrongcn: CN = `${rid}-other`, same CA; foreign: CN = rid, another CA, not the enrolled
  // certificate. The hub's registration event says why (emulator/broker/dps.c).
  const why = { wrongcn: /subject CN .* is not the registration id/, foreign: /neither the primary nor the secondary certificate/ };
  for (const name of ['wrongcn', 'foreign']) {
    const since = svc.events.length;
    const res = await registerX509(certs, name, { transport: 'http', host: host(), registrationId: rid });
    assert.equal(res.ok, false, name);
    assert.equal(res.error.name, 'UnauthorizedError', `${name}: ${JSON.stringify(res.error)}`);
    assert.equal(res.error.status, 401, name);
    assert.match(res.error.contentType ?? '', /^application\/json/, name);
    const ev = await svc.waitEvent((e) => svc.events.indexOf(e) >= since && e.kind === 'registration'
      && e.data?.registrationId === rid, 10000, `the refused registration (${name})`);
    assert.equal(ev.data.status, res.error.status, name);
    assert.equal(ev.data.transport, 'https', name);
    assert.match(ev.data.error, why[name], `${name}: ${ev.data.error}`);
  }
  assert.equal(svc.events.some((e) => e.kind === 'registration' && e.data?.registrationId === rid
    && e.data.status === 200), false, 'no registration succeeded');
});
