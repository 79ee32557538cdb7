// The web dashboard (docs/dashboard.md) in a real browser: Debian's chromium, headless, driven
// by playwright-core, against `twinhub serve` with a connected Azure IoT Node SDK device.
// What must show: the page loads with no console error and no request leaving the hub; the
// device list shows the device; telemetry appears without a reload and its numeric field is
// plotted; a desired patch made on the page reaches the device; a method invoked on the page
// is answered by the device; a request without the token is refused. Screenshots go to
// $TWINHUB_ARTIFACTS (meson: <build>/meson-logs/browser); docs/images has copies.

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { HERE, Message, call, launchBrowser, startHub, within } from './hub.mjs';

const T = { timeout: 60000 };
const ARTIFACTS = process.env.TWINHUB_ARTIFACTS || join(HERE, 'artifacts');
let hub;
let browser;
let page;
let client;
let twin;
const consoleErrors = [];
const outside = [];

/** GET `path` on the hub with Node's https (the hub's CA): {status, body}. */
function get(path, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = request(hub.origin + path, { ca: hub.ca, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function shot(name) {
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, name), fullPage: true });
}

/** Send telemetry every 200 ms until `until()` resolves (bounded by the caller's timeout). */
async function sendUntil(until, make) {
  let stop = false;
  let i = 0;
  const loop = (async () => {
    while (!stop) {
      await call((cb) => client.sendEvent(make(i++), cb));
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  try {
    return await until();
  } finally {
    stop = true;
    await loop;
  }
}

function telemetry(i) {
  const m = new Message(JSON.stringify({ temperature: 20 + (i % 7), humidity: 40 + (i % 3), label: 'room' }));
  m.properties.add('alert', i % 2 ? 'high' : 'none');
  m.contentType = 'application/json';
  m.contentEncoding = 'utf-8';
  return m;
}

before(async () => {
  hub = await startHub();
  browser = await launchBrowser();
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  // Nothing may leave the hub: every other origin is recorded and refused.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(hub.origin + '/')) return route.continue();
    outside.push(url);
    return route.abort();
  });
  page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
});

after(async () => {
  if (browser) await browser.close();
  if (hub) await hub.stop();
});

test('the banner and the info file give the dashboard URL with its token', T, () => {
  const url = hub.info.dashboardUrl;
  assert.match(url, /^https:\/\/127\.0\.0\.1:\d+\/\?token=[0-9a-f]{32}$/);
  assert.equal(hub.bannerLine, `  Dashboard ${url}`);
});

test('a request without the token is refused', T, async () => {
  for (const path of ['/', '/dashboard/app.js', '/dashboard/api/info', '/dashboard/events']) {
    const r = await get(path);
    assert.equal(r.status, 403, `${path} without the token`);
  }
  const wrong = await get('/dashboard/api/info', { Cookie: `twinhub-dashboard-${hub.httpsPort}=${'0'.repeat(32)}` });
  assert.equal(wrong.status, 403, 'a wrong token in the cookie');
  const badQuery = await get('/?token=' + '1'.repeat(32));
  assert.equal(badQuery.status, 403, 'a wrong token in the query');
  // The right token turns into a cookie and a redirect that drops it from the address.
  const token = new URL(hub.info.dashboardUrl).searchParams.get('token');
  const ok = await get('/?token=' + token);
  assert.equal(ok.status, 303);
  assert.equal(ok.headers.location, '/');
  assert.match(ok.headers['set-cookie'][0], /HttpOnly; Secure; SameSite=Strict/);
});

test('the page loads and the device list shows the device, connected without a reload', T, async () => {
  await page.goto(hub.info.dashboardUrl);
  assert.equal(new URL(page.url()).search, '', 'the token left the address bar');
  const row = page.locator('tr[data-device="dev-device"]');
  await row.waitFor({ timeout: 10000 });
  assert.match(await row.innerText(), /Disconnected/);
  await page.locator('#feed-state.up').waitFor({ timeout: 10000 });
  client = await hub.deviceClient();
  await within(15000, client.open(), 'the device to connect');
  await page.locator('tr[data-device="dev-device"] .pill.ok', { hasText: 'Connected' }).waitFor({ timeout: 10000 });
  await shot('devices.png');
});

test('telemetry appears without a reload and its numeric field is plotted', T, async () => {
  await page.goto(hub.origin + '/#/device/dev-device');
  await page.locator('[data-field="desired"]').waitFor({ timeout: 10000 });
  const box = page.locator('.chart-box[data-plot="dev-device"]');
  await sendUntil(async () => {
    await page.locator('tr[data-kind="telemetry"]', { hasText: 'temperature' }).first().waitFor({ timeout: 15000 });
    await page.waitForFunction(() => {
      const b = document.querySelector('.chart-box[data-plot="dev-device"]');
      return b && Number(b.dataset.points) >= 6 && b.chart;
    }, null, { timeout: 15000 });
  }, telemetry);
  assert.match(await box.getAttribute('data-fields'), /temperature/);
  const plotted = await page.evaluate(() => {
    const chart = document.querySelector('.chart-box[data-plot="dev-device"]').chart;
    return chart.data.datasets.map((d) => ({ label: d.label, n: d.data.length, y: d.data.map((p) => p.y) }));
  });
  const temp = plotted.find((d) => d.label === 'temperature');
  assert.ok(temp && temp.n >= 3, `temperature plotted: ${JSON.stringify(plotted)}`);
  assert.ok(temp.y.every((y) => y >= 20 && y < 27));
  // Application properties are shown with the body.
  assert.match(await page.locator('tr[data-kind="telemetry"]').first().innerText(), /alert=/);
  await shot('device.png');
});

test('a desired patch made on the page reaches the device', T, async () => {
  twin = await call((cb) => client.getTwin(cb));
  const got = new Promise((resolve) => {
    twin.on('properties.desired', (d) => { if (d.interval === 7) resolve(d); });
  });
  await call((cb) => twin.enableTwinDesiredPropertiesUpdates(cb)); // subscription barrier
  await page.fill('[data-field="desired-patch"]', '{"interval": 7}');
  await page.click('[data-action="update-desired"]');
  const desired = await within(15000, got, 'the desired patch at the device');
  assert.equal(desired.interval, 7);
  // The page shows the new desired version and that the agent has not acknowledged it.
  await page.locator('[data-field="desired"]', { hasText: '"interval": 7' }).waitFor({ timeout: 10000 });
  await page.locator('[data-field="unacknowledged"] li', { hasText: 'interval' }).waitFor({ timeout: 10000 });
  // Acknowledged as Plug and Play does: it leaves the list.
  await call((cb) => twin.properties.reported.update({ interval: { value: 7, ac: 200, av: desired.$version } }, cb));
  await page.locator('[data-field="unacknowledged"]', { hasText: 'every desired property is acknowledged' }).waitFor({ timeout: 10000 });
});

test('a method invoked on the page is answered by the device', T, async () => {
  client.onDeviceMethod('reboot', (req, res) => {
    res.send(200, { rebooted: true, delay: req.payload && req.payload.delay }, () => {});
  });
  await call((cb) => client._enableMethods(cb)); // subscription barrier
  await page.fill('[data-field="method-name"]', 'reboot');
  await page.fill('[data-field="method-payload"]', '{"delay": 3}');
  await page.click('[data-action="invoke-method"]');
  const result = page.locator('.card', { has: page.locator('[data-field="method-name"]') }).locator('pre.result');
  await result.filter({ hasText: 'status 200' }).waitFor({ timeout: 15000 });
  const text = await result.innerText();
  assert.match(text, /"rebooted": true/);
  assert.match(text, /"delay": 3/);
  await shot('device-actions.png');
});

test('the live events view and the query view work', T, async () => {
  await page.goto(hub.origin + '/#/events');
  await sendUntil(async () => {
    await page.locator('.chart-box[data-plot="dev-device"]').waitFor({ timeout: 10000 });
    await page.locator('tr[data-kind="telemetry"]').nth(3).waitFor({ timeout: 10000 });
  }, telemetry);
  await shot('events.png');
  await page.goto(hub.origin + '/#/query');
  await page.click('[data-action="run-query"]');
  await page.locator('table[data-table="query"] td', { hasText: 'dev-device' }).first().waitFor({ timeout: 10000 });
  await page.goto(hub.origin + '/#/security');
  await page.locator('table[data-table="security"] tr[data-device="dev-device"]').waitFor({ timeout: 10000 });
});

test('no console error and no request left the hub', T, () => {
  assert.deepEqual(consoleErrors, []);
  assert.deepEqual(outside, []);
});
