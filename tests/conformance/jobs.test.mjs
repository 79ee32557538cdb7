// Jobs (docs/jobs.md) with the official service SDK's JobClient (azure-iothub) over the
// HTTPS gateway, and devices of the official device SDK (azure-iot-device, MQTT/TLS) that
// receive what the jobs do: a twin update and a direct method run over a query condition,
// with status and deviceJobStatistics, cancel, the job query and FROM devices.jobs.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { desiredSubscribed, methodsSubscribed, within } from './hub.mjs';
import { ServiceSdk, startGatewayHub } from './service.mjs';

const T = { timeout: 90000 };
let hub;
let sdk;

before(async () => {
  hub = await startGatewayHub();
  sdk = await ServiceSdk.start(hub);
});

after(async () => {
  if (sdk) await sdk.close();
  if (hub) await hub.stop();
});

function unique(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** `n` new devices tagged {group}; resolves to [{id, key}]. */
async function newGroup(group, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const id = unique(group);
    const res = await sdk.registry('create', { deviceId: id });
    const twin = await sdk.registry('getTwin', id);
    await sdk.registry('updateTwin', id, { tags: { group } }, twin.body.etag);
    out.push({ id, key: res.body.authentication.symmetricKey.primaryKey });
  }
  return out;
}

/** Poll getJob until its status is one of `statuses` (bounded); resolves to the job. */
async function jobIn(jobId, statuses, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const job = (await sdk.jobs('getJob', jobId)).body;
    if (statuses.includes(job.status)) return job;
    if (Date.now() > deadline) throw new Error(`job ${jobId} still ${job.status}: ${JSON.stringify(job)}`);
    await new Promise((r) => setTimeout(r, 100)); // polling the hub, not waiting for it
  }
}

test('scheduleTwinUpdate over a query: every selected twin written, connected devices notified', T, async () => {
  const group = unique('tj');
  const devs = await newGroup(group, 3);
  await newGroup(unique('other'), 1); // not selected
  const clients = [];
  const got = [];
  for (const d of devs.slice(0, 2)) {
    const c = await hub.deviceClient(hub.connectionString(d.id, d.key));
    await within(20000, c.open(), 'Client.open()');
    const twin = await within(10000, c.getTwin(), 'the twin');
    got.push(new Promise((resolve) => twin.on('properties.desired', (p) => {
      if (p.fw === '2.0') resolve(p);
    })));
    await desiredSubscribed(twin);
    clients.push(c);
  }
  const jobId = unique('twinjob');
  const created = await sdk.jobs('scheduleTwinUpdate', jobId, `tags.group = '${group}'`,
    { etag: '*', tags: { rolled: true }, properties: { desired: { fw: '2.0' } } },
    new Date().toISOString(), 600);
  assert.equal(created.status, 200);
  assert.equal(created.body.jobId, jobId);
  assert.equal(created.body.type, 'scheduleUpdateTwin');
  assert.ok(['queued', 'running', 'completed'].includes(created.body.status), created.body.status);
  assert.equal(created.body.queryCondition, `tags.group = '${group}'`);

  const job = await jobIn(jobId, ['completed', 'failed']);
  assert.equal(job.status, 'completed', JSON.stringify(job));
  assert.deepEqual(job.deviceJobStatistics,
    { deviceCount: 3, failedCount: 0, succeededCount: 3, runningCount: 0, pendingCount: 0 });
  assert.ok(job.endTime && Date.parse(job.endTime) >= Date.parse(job.startTime));

  // On the devices: both connected ones got the notification, the offline one has it in its twin.
  const notes = await within(10000, Promise.all(got), 'the desired notifications');
  for (const p of notes) assert.equal(p.fw, '2.0');
  for (const d of devs) {
    const t = (await sdk.registry('getTwin', d.id)).body;
    assert.equal(t.properties.desired.fw, '2.0', d.id);
    assert.equal(t.tags.rolled, true, d.id);
    assert.equal(t.tags.group, group, 'a job patches tags, it does not replace them');
  }
  for (const c of clients) await c.close();
});

test('scheduleDeviceMethod over a query: answers recorded, an offline device fails', T, async () => {
  const group = unique('mj');
  const devs = await newGroup(group, 3);
  const clients = [];
  for (const d of devs.slice(0, 2)) {
    const c = await hub.deviceClient(hub.connectionString(d.id, d.key));
    await within(20000, c.open(), 'Client.open()');
    c.onDeviceMethod('reboot', (req, res) => res.send(200, { rebooted: d.id, delay: req.payload.delay }, () => {}));
    await methodsSubscribed(c);
    clients.push(c);
  }
  const jobId = unique('methodjob');
  const created = await sdk.jobs('scheduleDeviceMethod', jobId, `tags.group = '${group}'`,
    { methodName: 'reboot', payload: { delay: 3 }, responseTimeoutInSeconds: 10 });
  assert.equal(created.body.type, 'scheduleDeviceMethod');
  assert.equal(created.body.cloudToDeviceMethod.methodName, 'reboot');
  const job = await jobIn(jobId, ['completed', 'failed']);
  assert.equal(job.status, 'completed', JSON.stringify(job));
  assert.deepEqual(job.deviceJobStatistics,
    { deviceCount: 3, failedCount: 1, succeededCount: 2, runningCount: 0, pendingCount: 0 });

  // The per-device records, as FROM devices.jobs shows them.
  const pages = await sdk.query(`SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '${jobId}'`, 10);
  const rows = pages.body.flatMap((p) => p.items);
  assert.equal(pages.body[0].itemType, 'deviceJob');
  assert.equal(rows.length, 3);
  for (const d of devs.slice(0, 2)) {
    const row = rows.find((r) => r.deviceId === d.id);
    assert.equal(row.status, 'completed');
    assert.equal(row.jobType, 'scheduleDeviceMethod');
    assert.deepEqual(row.outcome.deviceMethodResponse, { status: 200, payload: { rebooted: d.id, delay: 3 } });
  }
  const offline = rows.find((r) => r.deviceId === devs[2].id);
  assert.equal(offline.status, 'failed');
  assert.equal(offline.error.code, 'DeviceNotOnline');
  for (const c of clients) await c.close();
});

test('a job scheduled for later can be cancelled; JobClient.createQuery lists jobs by type and status', T, async () => {
  const group = unique('cj');
  const devs = await newGroup(group, 1);
  const jobId = unique('later');
  const later = new Date(Date.now() + 3600 * 1000).toISOString();
  const created = await sdk.jobs('scheduleTwinUpdate', jobId, `tags.group = '${group}'`,
    { etag: '*', properties: { desired: { never: true } } }, later, 600);
  assert.equal(created.body.status, 'scheduled');
  assert.equal(created.body.startTime.slice(0, 19), later.slice(0, 19));
  const cancelled = await sdk.jobs('cancelJob', jobId);
  assert.equal(cancelled.body.status, 'cancelled');
  assert.equal((await sdk.jobs('getJob', jobId)).body.status, 'cancelled');
  const t = (await sdk.registry('getTwin', devs[0].id)).body;
  assert.equal(t.properties.desired.never, undefined, 'a cancelled job does nothing');

  const pages = await sdk.call('jobs', 'jobQuery', 'scheduleUpdateTwin', 'cancelled', 2);
  const items = pages.body.flatMap((p) => p.items);
  assert.ok(items.some((j) => j.jobId === jobId), JSON.stringify(pages.body));
  assert.ok(items.every((j) => j.status === 'cancelled' && j.type === 'scheduleUpdateTwin'));
  assert.equal(pages.body[0].itemType, 'jobResponse');
});

test('refusals: an unknown job, a bad condition, a reused job id', T, async () => {
  await assert.rejects(sdk.jobs('getJob', unique('nosuch')), (err) => err.status === 404);
  await assert.rejects(
    sdk.jobs('scheduleTwinUpdate', unique('bad'), 'tags.x = = 1', { tags: { a: 1 } }),
    (err) => err.status === 400 && /queryCondition/.test(err.body));
  const jobId = unique('dup');
  await sdk.jobs('scheduleTwinUpdate', jobId, "deviceId = 'none'", { tags: { a: 1 } });
  await assert.rejects(
    sdk.jobs('scheduleTwinUpdate', jobId, "deviceId = 'none'", { tags: { a: 1 } }),
    (err) => err.status >= 400 && /already exists/.test(err.body));
});
