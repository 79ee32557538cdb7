// A small re-implementation of the Azure IoT security agent's configuration contract
// (the `azureiotsecurity` module twin; facts in the security-module reference notes,
// contract in scenarios/README.md), on the official Azure IoT Node SDK over Mqtt/TLS.
// security-agent-ref.mjs runs it as specified; security-agent-wrong.mjs with two defects.
//
// What it does:
//   - reads desired."ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration" (every setting
//     is {"value": ...}); a missing object, key or null value means the key's default;
//   - validates every key's type (ISO 8601 duration, integer, priority Off/Low/High in any
//     case, boolean, string); one bad key rejects the whole update and the previous
//     configuration stays in force (all or nothing);
//   - reports the effective configuration in the same {"value": ...} shape after start-up and
//     after every accepted change (as the C# agent does; nothing after a rejected one);
//   - queues an Operational/Triggered ConfigurationError event (TypeMismatch for a rejected
//     update; Conflict and NotOptimal for suspicious accepted ones);
//   - collects ListeningPorts, LocalUsers and SystemInformation snapshots every
//     snapshotFrequency into the high or low queue (per eventPriority*; Off skips), and sends
//     the high queue every highPriorityMessageFrequency and the low queue every
//     lowPriorityMessageFrequency, operational events riding along with either; a send
//     happens only when there is something to send;
//   - every message is a security message ($.ifid = urn:azureiot:Security:SecurityAgent:1).
//
// Environment: TWINHUB_CONNECTION_STRING (a module connection string for azureiotsecurity, a
// device one works too), TWINHUB_CA_FILE and/or NODE_EXTRA_CA_CERTS, and optionally
//   TWINHUB_TIME_SCALE         factor applied to every period the agent waits (default 1;
//                              0.1 turns PT15S into 1.5 s). `twinhub run --time-scale F` sets
//                              it, and multiplies the scenarios' bounds by the same F, so the
//                              agent keeps real-time cadence relative to the scenario.
//                              Reported values are not scaled.
//   SECURITY_AGENT_TIME_SCALE  the same, taking precedence (the agent's own knob)
//   SECURITY_AGENT_ID          the AgentId GUID (default: a random one per process)
//
// options.applyPeriodMs (security-agent-periodic.mjs: 10000, the C agent's twin update period)
// makes the agent apply desired changes only on a timer of that period (scaled like every other
// period) instead of as they arrive; the start-up configuration is applied at once.

import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import {
  Client, Message, ModuleClient, Mqtt, applyCa, call, connectionSettings, envNumber,
  fixedDelayPolicy, isPlainObject, log, onShutdown, setAgentName, sleep,
} from './common.mjs';

export const CONFIG_OBJECT = 'ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration';
export const SECURITY_INTERFACE_ID = 'urn:azureiot:Security:SecurityAgent:1';
const AGENT_VERSION = '0.0.6-ref';

// ------------------------------------------------------------------ values

const DURATION_RE = /^P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$/;

/** ISO 8601 duration -> milliseconds (Y = 365 days, M = 30 days), or null. Zero is invalid. */
export function parseDuration(text) {
  if (typeof text !== 'string') return null;
  const m = DURATION_RE.exec(text);
  if (!m) return null;
  const n = (i) => (m[i] === undefined ? 0 : Number(m[i]));
  const days = n(1) * 365 + n(2) * 30 + n(3) * 7 + n(4);
  const ms = Math.round((((days * 24 + n(5)) * 60 + n(6)) * 60 + n(7)) * 1000);
  return ms > 0 ? ms : null;
}

/** Milliseconds -> canonical ISO 8601 duration (days, then T hours minutes seconds). */
export function formatDuration(ms) {
  let rest = ms;
  const days = Math.floor(rest / 86400000); rest -= days * 86400000;
  const hours = Math.floor(rest / 3600000); rest -= hours * 3600000;
  const minutes = Math.floor(rest / 60000); rest -= minutes * 60000;
  const seconds = rest / 1000;
  let out = 'P';
  if (days) out += `${days}D`;
  if (hours || minutes || seconds) {
    out += 'T';
    if (hours) out += `${hours}H`;
    if (minutes) out += `${minutes}M`;
    if (seconds) out += `${seconds}S`;
  }
  return out;
}

const PRIORITIES = { off: 'Off', low: 'Low', high: 'High' };

// Each type: parse(value) -> {ok: true, value: canonical} or {ok: false}.
const TYPES = {
  duration: (v) => {
    const ms = parseDuration(v);
    return ms === null ? { ok: false } : { ok: true, value: formatDuration(ms) };
  },
  integer: (v) => (Number.isInteger(v) ? { ok: true, value: v } : { ok: false }),
  priority: (v) => (typeof v === 'string' && PRIORITIES[v.toLowerCase()]
    ? { ok: true, value: PRIORITIES[v.toLowerCase()] } : { ok: false }),
  boolean: (v) => (typeof v === 'boolean' ? { ok: true, value: v } : { ok: false }),
  string: (v) => (typeof v === 'string' ? { ok: true, value: v } : { ok: false }),
  optionalString: (v) => (typeof v === 'string' || v === null ? { ok: true, value: v } : { ok: false }),
};

// The keys and their defaults: the schema defaults, which are also the C# agent's (the
// C agent defaults maxLocalCacheSizeInBytes to 10485760 instead; see scenarios/README.md).
export const KEYS = {
  highPriorityMessageFrequency: ['duration', 'PT7M'],
  lowPriorityMessageFrequency: ['duration', 'PT5H'],
  snapshotFrequency: ['duration', 'PT13H'],
  maxLocalCacheSizeInBytes: ['integer', 2560000],
  maxMessageSizeInBytes: ['integer', 204800],
  eventPriorityConnectedHardware: ['priority', 'Low'],
  eventPriorityListeningPorts: ['priority', 'High'],
  eventPriorityProcessCreate: ['priority', 'Low'],
  eventPriorityProcessTerminate: ['priority', 'Low'],
  eventPrioritySystemInformation: ['priority', 'Low'],
  eventPriorityLocalUsers: ['priority', 'High'],
  eventPriorityLogin: ['priority', 'High'],
  eventPriorityConnectionCreate: ['priority', 'Low'],
  eventPriorityFirewallConfiguration: ['priority', 'Low'],
  eventPriorityOSBaseline: ['priority', 'Low'],
  eventPriorityDiagnostic: ['priority', 'Low'],
  eventPriorityConfigurationError: ['priority', 'Low'],
  eventPriorityDroppedEventsStatistics: ['priority', 'Low'],
  eventPriorityMessageStatistics: ['priority', 'Low'],
  aggregationEnabledProcessCreate: ['boolean', true],
  aggregationIntervalProcessCreate: ['duration', 'PT1H'],
  aggregationEnabledConnectionCreate: ['boolean', true],
  aggregationIntervalConnectionCreate: ['duration', 'PT1H'],
  aggregationEnabledProcessTerminate: ['boolean', true],
  aggregationIntervalProcessTerminate: ['duration', 'PT1H'],
  baselineCustomChecksEnabled: ['boolean', false],
  baselineCustomChecksFilePath: ['optionalString', null],
  baselineCustomChecksFileHash: ['optionalString', null],
  hubResourceId: ['string', ''],
};

export function defaultConfig() {
  const c = {};
  for (const [k, [, d]] of Object.entries(KEYS)) c[k] = d;
  return c;
}

/**
 * Parse a configuration object. Returns {config} or {errors: [key, ...]}.
 * `lenient` (the wrong agent) takes any JSON value of the right shape as is.
 */
export function parseConfig(obj, lenient = false) {
  if (obj === undefined || obj === null) obj = {};
  if (!isPlainObject(obj)) return { errors: [CONFIG_OBJECT] };
  const config = defaultConfig();
  const errors = [];
  for (const [key, [type]] of Object.entries(KEYS)) {
    const entry = obj[key];
    if (entry === undefined || entry === null) continue; // removed: the default
    if (!isPlainObject(entry) || !Object.prototype.hasOwnProperty.call(entry, 'value')) {
      errors.push(key); // a bare value (the pre-2019 flat format) or a missing "value"
      continue;
    }
    if (entry.value === null && type !== 'optionalString') continue;
    if (lenient) {
      config[key] = entry.value;
      continue;
    }
    const r = TYPES[type](entry.value);
    if (r.ok) config[key] = r.value;
    else errors.push(key);
  }
  return errors.length ? { errors } : { config };
}

/** The reported form: every key as {"value": v}; null strings become null (deleted). */
export function reportedForm(config) {
  const out = {};
  for (const [k, v] of Object.entries(config)) out[k] = v === null ? null : { value: v };
  return out;
}

/** Conflict and NotOptimal checks of an accepted configuration. */
function sanityErrors(config) {
  const out = [];
  const high = parseDuration(config.highPriorityMessageFrequency);
  const low = parseDuration(config.lowPriorityMessageFrequency);
  if (high !== null && low !== null && high > low) {
    out.push({
      ConfigurationName: 'highPriorityMessageFrequency', ErrorType: 'Conflict',
      UsedConfiguration: String(config.highPriorityMessageFrequency),
      Message: 'High priority interval is longer than low priority interval',
    });
  }
  if (Number.isInteger(config.maxLocalCacheSizeInBytes) && Number.isInteger(config.maxMessageSizeInBytes)) {
    if (config.maxLocalCacheSizeInBytes < config.maxMessageSizeInBytes) {
      out.push({
        ConfigurationName: 'maxLocalCacheSizeInBytes', ErrorType: 'Conflict',
        UsedConfiguration: String(config.maxLocalCacheSizeInBytes),
        Message: 'MaxLocalCacheSize is smaller than MaxMessageSize',
      });
    }
    if (config.maxMessageSizeInBytes % 4096 !== 0) {
      out.push({
        ConfigurationName: 'maxMessageSizeInBytes', ErrorType: 'NotOptimal',
        UsedConfiguration: String(config.maxMessageSizeInBytes),
        Message: 'Message size should be multiple of 4096',
      });
    }
  }
  return out;
}

// ------------------------------------------------------------------ events

function timestamps() {
  const now = new Date();
  const local = new Date(now.getTime() - now.getTimezoneOffset() * 60000);
  return {
    TimestampLocal: local.toISOString().slice(0, 19),
    TimestampUTC: `${now.toISOString().slice(0, 19)}Z`,
  };
}

function event(name, eventType, category, payload) {
  return {
    Id: randomUUID(),
    ...timestamps(),
    Category: category,
    Name: name,
    EventType: eventType,
    IsEmpty: payload.length === 0,
    PayloadSchemaVersion: '1.0',
    Payload: payload,
  };
}

function listeningPorts() {
  const items = [];
  for (const [file, proto] of [['/proc/net/tcp', 'tcp'], ['/proc/net/tcp6', 'tcp']]) {
    let text;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4 || cols[3] !== '0A') continue; // LISTEN
      const [addrHex, portHex] = cols[1].split(':');
      const address = addrHex.length === 8
        ? addrHex.match(/../g).reverse().map((h) => parseInt(h, 16)).join('.')
        : (/^0+$/.test(addrHex) ? '::' : 'ipv6');
      items.push({ LocalAddress: address, LocalPort: String(parseInt(portHex, 16)), Protocol: proto, RemoteAddress: '*', RemotePort: '*' });
      if (items.length >= 20) return items;
    }
  }
  return items;
}

function localUsers() {
  const u = os.userInfo();
  return [{ UserId: String(u.uid), UserName: u.username, GroupIds: String(u.gid), GroupNames: '' }];
}

function systemInformation() {
  return [{
    OSName: os.type(), OSVersion: os.release(), OSVendor: os.platform(), OsArchitecture: os.arch(),
    HostName: os.hostname(),
    TotalPhysicalMemoryInKB: Math.round(os.totalmem() / 1024),
    FreePhysicalMemoryInKB: Math.round(os.freemem() / 1024),
  }];
}

const SNAPSHOT_COLLECTORS = [
  ['ListeningPorts', 'eventPriorityListeningPorts', listeningPorts],
  ['LocalUsers', 'eventPriorityLocalUsers', localUsers],
  ['SystemInformation', 'eventPrioritySystemInformation', systemInformation],
];

// ------------------------------------------------------------------ the agent

/**
 * options.lenientTypes (default false): accept any value type (the wrong agent).
 * options.markAsSecurity (default true): set $.ifid on every message.
 */
export async function runSecurityAgent(options = {}) {
  const opts = {
    lenientTypes: false, markAsSecurity: true, applyPeriodMs: 0, name: 'security-agent', ...options,
  };
  setAgentName(opts.name);
  const { cs, fields } = connectionSettings();
  const scale = envNumber('SECURITY_AGENT_TIME_SCALE', envNumber('TWINHUB_TIME_SCALE', 1));
  const agentId = process.env.SECURITY_AGENT_ID || randomUUID();
  const scaled = (ms) => Math.max(100, Math.round(ms * scale));
  const periodOf = (text, dflt) => scaled(parseDuration(text) ?? parseDuration(dflt));

  const client = fields.ModuleId
    ? ModuleClient.fromConnectionString(cs, Mqtt)
    : Client.fromConnectionString(cs, Mqtt);
  client.setRetryPolicy(fixedDelayPolicy(2000));
  await applyCa(client);

  let config = defaultConfig();
  let lastDesiredText;
  const queues = { High: [], Low: [], Operational: [] };
  const timers = {};
  let closing = false;
  let twin = null;

  const report = async () => {
    const patch = { [CONFIG_OBJECT]: reportedForm(config) };
    try {
      await call((cb) => twin.properties.reported.update(patch, cb));
      log('reported configuration', {
        high: config.highPriorityMessageFrequency, low: config.lowPriorityMessageFrequency,
        snapshot: config.snapshotFrequency,
      });
    } catch (err) {
      log(`reported patch failed: ${err.message}`);
    }
  };

  // A new configuration error replaces those still waiting (as the C# agent does).
  const raiseConfigurationErrors = (items) => {
    queues.Operational = queues.Operational.filter((e) => e.Name !== 'ConfigurationError');
    if (items.length) queues.Operational.push(event('ConfigurationError', 'Operational', 'Triggered', items));
  };

  const send = async (queueNames) => {
    const events = [];
    for (const q of queueNames) events.push(...queues[q].splice(0));
    if (!events.length) return;
    // Keep each message's events under maxMessageSizeInBytes (at least one event each).
    const limit = Number.isInteger(config.maxMessageSizeInBytes) && config.maxMessageSizeInBytes > 0
      ? config.maxMessageSizeInBytes : 204800;
    const batches = [];
    let batch = [];
    let size = 0;
    for (const e of events) {
      const n = Buffer.byteLength(JSON.stringify(e));
      if (batch.length && size + n > limit) { batches.push(batch); batch = []; size = 0; }
      batch.push(e); size += n;
    }
    if (batch.length) batches.push(batch);
    for (const evs of batches) {
      const body = { AgentVersion: AGENT_VERSION, AgentId: agentId, MessageSchemaVersion: '1.0', Events: evs };
      const msg = new Message(JSON.stringify(body));
      if (opts.markAsSecurity) msg.setAsSecurityMessage();
      msg.contentType = 'application/json';
      msg.contentEncoding = 'utf-8';
      try {
        await client.sendEvent(msg);
        log(`security message: ${evs.map((e) => e.Name).join(', ')}`);
      } catch (err) {
        log(`send failed: ${err.message}`);
      }
    }
  };

  const snapshot = () => {
    for (const [name, key, collect] of SNAPSHOT_COLLECTORS) {
      const prio = String(config[key]);
      if (prio === 'Off') continue;
      const q = prio === 'High' ? 'High' : 'Low';
      queues[q] = queues[q].filter((e) => e.Name !== name); // the newest snapshot wins
      queues[q].push(event(name, 'Security', 'Periodic', collect()));
    }
  };

  // (Re)start a periodic timer when its period changed.
  const arm = (name, period, fn) => {
    const t = timers[name];
    if (t && t.period === period) return;
    if (t) clearInterval(t.handle);
    timers[name] = { period, handle: setInterval(() => { if (!closing) fn(); }, period) };
  };
  const armAll = () => {
    arm('snapshot', periodOf(config.snapshotFrequency, 'PT13H'), snapshot);
    arm('high', periodOf(config.highPriorityMessageFrequency, 'PT7M'), () => send(['Operational', 'High']));
    arm('low', periodOf(config.lowPriorityMessageFrequency, 'PT5H'), () => send(['Operational', 'Low']));
  };

  const apply = async (desired, why) => {
    // No $version: the SDK's cached copy is being refreshed by a GET; its events follow.
    if (!desired || !Number.isInteger(desired.$version)) return;
    const obj = desired[CONFIG_OBJECT];
    const text = JSON.stringify(obj ?? null);
    if (text === lastDesiredText) return;
    lastDesiredText = text;
    const r = parseConfig(obj, opts.lenientTypes);
    if (r.errors) {
      log(`rejected configuration (${why}): cannot parse ${r.errors.join(', ')}`);
      raiseConfigurationErrors([{
        ConfigurationName: 'RemoteConfiguration', ErrorType: 'TypeMismatch',
        UsedConfiguration: JSON.stringify(reportedForm(config)),
        Message: `Couldn't parse the following configurations: ${r.errors.join(', ')}`,
      }]);
      if (why === 'start') await report(); // the first report shows the defaults in force
      return;
    }
    config = r.config;
    raiseConfigurationErrors(sanityErrors(config));
    armAll();
    await report();
  };

  client.on('error', (err) => log(`client error: ${err.message}`));
  client.on('disconnect', async () => {
    if (closing) return;
    log('disconnected; reopening');
    while (!closing) {
      await sleep(2000);
      try { await client.open(); break; } catch (err) { log(`reopen failed: ${err.message}`); }
    }
  });
  let started = false;
  client.on('connect', async () => {
    if (!started || closing) return;
    try {
      twin = await client.getTwin();
      await apply(twin.properties.desired, 'reconnected');
    } catch (err) {
      log(`twin read failed: ${err.message}`);
    }
  });

  let applyTimer = null;
  onShutdown(async () => {
    closing = true;
    if (applyTimer) clearInterval(applyTimer);
    for (const t of Object.values(timers)) clearInterval(t.handle);
    await client.close();
  });

  // Start-up: connect and read the twin within 30 s, as the real agents require.
  const deadline = Date.now() + 30000;
  for (;;) {
    try {
      await client.open();
      twin = await client.getTwin();
      break;
    } catch (err) {
      if (Date.now() > deadline) {
        process.stderr.write(`${opts.name}: Remote Configuration / Timeout: ${err.message}\n`);
        process.exit(1);
      }
      log(`start-up: ${err.message}; retrying`);
      await sleep(1000);
    }
  }
  started = true;
  log(`connected as ${fields.DeviceId}${fields.ModuleId ? '/' + fields.ModuleId : ''}; time scale ${scale}`);
  // Subscribe to desired patches, then read the twin again (the GET follows the
  // SUBSCRIBE on the connection), so that no patch falls between reading and listening.
  let ready = false;
  let pending = false;
  twin.on('properties.desired', () => {
    if (!ready) return;
    if (opts.applyPeriodMs) {
      pending = true; // applied at the next tick of the update period
      return;
    }
    apply(twin.properties.desired, 'patch').catch((err) => log(`apply failed: ${err.message}`));
  });
  if (opts.applyPeriodMs) {
    const period = scaled(opts.applyPeriodMs);
    log(`applies desired changes every ${period} ms`);
    applyTimer = setInterval(() => {
      if (closing || !pending) return;
      pending = false;
      apply(twin.properties.desired, 'update period').catch((err) => log(`apply failed: ${err.message}`));
    }, period);
  }
  twin = await client.getTwin();
  ready = true;
  await apply(twin.properties.desired, 'start');
  armAll();
  snapshot();
}
