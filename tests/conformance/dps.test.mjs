// The provisioning service over MQTT (docs/dps.md) with the official Node SDKs:
// azure-iot-provisioning-device + -mqtt + azure-iot-security-symmetric-key register an
// individual enrollment and a group member (derived key) on the hub's TLS port (a free one:
// the MQTT transport dials mqtts://provisioningHost, which may carry a port), then
// azure-iot-device connects to the assignedHub it was given and reads a twin holding the
// enrollment's initialTwin. A disabled enrollment and a wrong key are refused with a 4xx.
// The HTTPS transport and the service SDK need port 443: dps-gateway.test.mjs.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Client, Mqtt, newKey, startHub, within } from './hub.mjs';
import { deriveKey, enroll, register } from './dps.mjs';

const T = { timeout: 60000 };
let hub;
let svc;

before(async () => {
  hub = await startHub();
  svc = await hub.service();
});

after(async () => {
  if (hub) await hub.stop();
});

const unique = (p) => `${p}-${randomUUID().slice(0, 8)}`;
const mqttHost = () => `127.0.0.1:${hub.info.mqttsPort}`;

/** Connect to the assigned hub as the registration says, and read the twin. */
async function twinOf(state, key) {
  const cs = `HostName=${state.assignedHub};DeviceId=${state.deviceId};SharedAccessKey=${key}`
    + `;GatewayHostName=127.0.0.1:${hub.info.mqttsPort}`;
  const client = Client.fromConnectionString(cs, Mqtt);
  await client.setOptions({ ca: hub.ca });
  hub.clients.push(client);
  await within(15000, client.open(), 'the device to connect to the assigned hub');
  const twin = await within(15000, client.getTwin(), 'the twin');
  return twin.properties.desired;
}

test('the info file names the ID scope and the provisioning host', T, () => {
  assert.match(hub.info.idScope, /^0ne[0-9A-Za-z]+$/);
  assert.equal(hub.info.provisioningHost, '127.0.0.1');
});

test('an individual enrollment registers over MQTT and the device reads its initial twin', T, async () => {
  const rid = unique('dps-ind');
  const key = newKey();
  await enroll(svc, 'enrollments', rid, {
    registrationId: rid,
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: newKey() } },
    initialTwin: { tags: { site: 'lab' }, properties: { desired: { rate: 7 } } },
  });
  const res = await register(hub, { transport: 'mqtt', host: mqttHost(), registrationId: rid, key, payload: { fw: '2.0' } });
  assert.ok(res.ok, JSON.stringify(res.error));
  const st = res.value;
  assert.equal(st.status, 'assigned');
  assert.equal(st.deviceId, rid);
  assert.equal(st.assignedHub, hub.info.hubName);
  assert.deepEqual(st.payload, { fw: '2.0' });
  const desired = await twinOf(st, key);
  assert.equal(desired.rate, 7);
  const ev = await svc.waitEvent((e) => e.kind === 'registration' && e.data?.registrationId === rid);
  assert.equal(ev.data.transport, 'mqtt');
});

test('a group member registers over MQTT with the derived key', T, async () => {
  const group = unique('dps-grp');
  const groupKey = newKey();
  await enroll(svc, 'enrollmentGroups', group, {
    enrollmentGroupId: group,
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupKey, secondaryKey: newKey() } },
    initialTwin: { properties: { desired: { mode: 'fleet' } } },
  });
  const rid = unique('member');
  const key = deriveKey(groupKey, rid);
  const res = await register(hub, { transport: 'mqtt', host: mqttHost(), registrationId: rid, key });
  assert.ok(res.ok, JSON.stringify(res.error));
  assert.equal(res.value.deviceId, rid);
  const desired = await twinOf(res.value, key);
  assert.equal(desired.mode, 'fleet');
});

test('a disabled enrollment and a wrong key are refused over MQTT with 401', T, async () => {
  const rid = unique('dps-off');
  const key = newKey();
  await enroll(svc, 'enrollments', rid, {
    provisioningStatus: 'disabled',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key } },
  });
  let res = await register(hub, { transport: 'mqtt', host: mqttHost(), registrationId: rid, key });
  assert.equal(res.ok, false);
  assert.equal(res.error.name, 'UnauthorizedError', JSON.stringify(res.error));
  assert.match(res.error.body?.message ?? '', /disabled/);

  const rid2 = unique('dps-key');
  await enroll(svc, 'enrollments', rid2, { attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: newKey() } } });
  res = await register(hub, { transport: 'mqtt', host: mqttHost(), registrationId: rid2, key: newKey() });
  assert.equal(res.ok, false);
  assert.equal(res.error.name, 'UnauthorizedError', JSON.stringify(res.error));
  assert.equal(res.error.body?.errorCode, 401002);
});
