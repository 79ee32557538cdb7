#!/usr/bin/env node
// Runs one shipped scenario suite with `twinhub run` against an agent and checks the verdict:
// the exit status and, from the JUnit report, which steps failed and what the failure
// messages say.
//
//   node check-suite.mjs --twinhub BIN --scenarios DIR --agent-script FILE.mjs [--expect SPEC.json]
//                        [--time-scale F]
//
// --time-scale F is passed to `twinhub run` (every bound times F; the agent gets
// TWINHUB_TIME_SCALE=F and scales its own periods by it).
// Without --expect, every step of every scenario in DIR must pass (exit 0). SPEC.json
// describes a run that must fail:
//   {"exit": 1,
//    "failures": [{"scenario": "<scenario name>", "step": "<step name>",
//                  "messageIncludes": ["text", ...]}]}
// Exactly the listed steps must fail (one per scenario: the runner skips the rest of a
// scenario after its first failure), every other scenario must pass, each failure message
// must show an expected and an actual value, and the steps after a failure must be skipped.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';

function usage(msg) {
  process.stderr.write(`check-suite: ${msg}\n` +
    'usage: node check-suite.mjs --twinhub BIN --scenarios DIR --agent-script FILE.mjs [--expect SPEC.json] [--time-scale F] [--keep]\n');
  process.exit(2);
}

const args = { keep: false };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  const next = () => {
    if (i + 1 >= process.argv.length) usage(`${a} needs a value`);
    return process.argv[++i];
  };
  if (a === '--twinhub') args.twinhub = next();
  else if (a === '--scenarios') args.scenarios = next();
  else if (a === '--agent-script') args.agentScript = next();
  else if (a === '--expect') args.expect = next();
  else if (a === '--time-scale') args.timeScale = next();
  else if (a === '--keep') args.keep = true;
  else usage(`unknown argument ${a}`);
}
const twinhub = args.twinhub || process.env.TWINHUB_BIN;
if (!twinhub) usage('--twinhub (or TWINHUB_BIN) is required');
if (!existsSync(twinhub)) usage(`${twinhub} does not exist: build with ninja first`);
if (!args.scenarios) usage('--scenarios is required');
if (!args.agentScript) usage('--agent-script is required');

const scenarioDir = resolve(args.scenarios);
const files = readdirSync(scenarioDir).filter((f) => f.endsWith('.json')).sort().map((f) => join(scenarioDir, f));
if (!files.length) usage(`no scenario files in ${scenarioDir}`);
const scenarios = files.map((f) => ({ file: f, doc: JSON.parse(readFileSync(f, 'utf8')) }));
const expect = args.expect
  ? JSON.parse(readFileSync(args.expect, 'utf8'))
  : { exit: 0, failures: [] };

const shq = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;
const agentCommand = `${shq(process.execPath)} ${shq(resolve(args.agentScript))}`;

const problems = [];
const problem = (msg) => problems.push(msg);

// ---------------------------------------------------------------- run

const work = mkdtempSync(join(tmpdir(), `twinhub-suite-${basename(scenarioDir)}-`));
const junitPath = join(work, 'junit.xml');
const runArgs = ['run', ...files, '--agent', agentCommand, '--junit', junitPath, '--report-dir', join(work, 'report')];
if (args.timeScale) runArgs.push('--time-scale', args.timeScale);
process.stdout.write(`# ${twinhub} ${runArgs.map((a) => (/[\s']/.test(a) ? shq(a) : a)).join(' ')}\n`);

const started = Date.now();
const code = await new Promise((res) => {
  const child = spawn(twinhub, runArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => process.stdout.write(d));
  child.stderr.on('data', (d) => process.stdout.write(d));
  child.on('error', (err) => { problem(`cannot start ${twinhub}: ${err.message}`); res(-1); });
  child.on('exit', (c, sig) => res(sig ? `signal ${sig}` : c));
});
const seconds = ((Date.now() - started) / 1000).toFixed(1);
process.stdout.write(`# twinhub run exited with ${code} after ${seconds} s\n`);
if (code !== expect.exit) problem(`exit status ${code}, expected ${expect.exit}`);

// ---------------------------------------------------------------- JUnit

function unescapeXml(s) {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|quot|apos|lt|gt|amp);/g, (_, e) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return { quot: '"', apos: "'", lt: '<', gt: '>', amp: '&' }[e];
  });
}

function attrs(text) {
  const out = {};
  for (const m of text.matchAll(/([\w:-]+)\s*=\s*("([^"]*)"|'([^']*)')/g)) out[m[1]] = unescapeXml(m[3] ?? m[4]);
  return out;
}

/** [{name, cases: [{name, status: 'pass'|'fail'|'skip', message}]}] */
function parseJUnit(xml) {
  const suites = [];
  for (const sm of xml.matchAll(/<testsuite\b([^>]*?)(\/>|>([\s\S]*?)<\/testsuite>)/g)) {
    const suite = { name: attrs(sm[1]).name, cases: [] };
    const body = sm[3] ?? '';
    for (const cm of body.matchAll(/<testcase\b([^>]*?)(\/>|>([\s\S]*?)<\/testcase>)/g)) {
      const inner = cm[3] ?? '';
      const c = { name: attrs(cm[1]).name, status: 'pass', message: '' };
      const fm = /<(failure|error)\b([^>]*?)(\/>|>([\s\S]*?)<\/\1>)/.exec(inner);
      if (fm) {
        c.status = 'fail';
        c.message = [attrs(fm[2]).message ?? '', unescapeXml((fm[4] ?? '').replace(/<!\[CDATA\[([\s\S]*?)\]\]>/g, '$1'))]
          .filter(Boolean).join('\n');
      } else if (/<skipped\b/.test(inner)) {
        c.status = 'skip';
      }
      suite.cases.push(c);
    }
    suites.push(suite);
  }
  return suites;
}

let suites = [];
if (!existsSync(junitPath)) {
  problem(`no JUnit report at ${junitPath}`);
} else {
  suites = parseJUnit(readFileSync(junitPath, 'utf8'));
  if (suites.length !== scenarios.length) {
    problem(`the JUnit report has ${suites.length} test suites, expected ${scenarios.length} (one per scenario)`);
  }
}

for (const { file, doc } of scenarios) {
  const suite = suites.find((s) => s.name === doc.name);
  if (!suite) {
    if (suites.length) problem(`no <testsuite name="${doc.name}"> for ${basename(file)}`);
    continue;
  }
  const stepNames = doc.steps.map((s, i) => s.name ?? `#${i + 1}`);
  if (suite.cases.length !== stepNames.length) {
    problem(`${doc.name}: ${suite.cases.length} test cases, expected ${stepNames.length} (one per step)`);
  }
  const wanted = expect.failures.filter((f) => f.scenario === doc.name);
  if (wanted.length > 1) problem(`bad expectation: more than one failure listed for ${doc.name}`);
  const want = wanted[0];
  const failedAt = suite.cases.findIndex((c) => c.status === 'fail');
  const failed = failedAt >= 0 ? suite.cases[failedAt] : null;
  if (!want) {
    if (failed) problem(`${doc.name}: step "${failed.name}" failed unexpectedly:\n    ${failed.message.replace(/\n/g, '\n    ')}`);
    const skipped = suite.cases.filter((c) => c.status === 'skip');
    if (!failed && skipped.length) problem(`${doc.name}: ${skipped.length} steps skipped although none failed`);
    if (!failed) process.stdout.write(`ok   ${doc.name}: all ${suite.cases.length} steps passed\n`);
    continue;
  }
  if (!stepNames.includes(want.step)) problem(`bad expectation: ${doc.name} has no step "${want.step}"`);
  if (!failed) {
    problem(`${doc.name}: expected step "${want.step}" to fail, but every step passed`);
    continue;
  }
  if (failed.name !== want.step) {
    problem(`${doc.name}: step "${failed.name}" failed, expected "${want.step}" to be the failing step:\n    ${failed.message}`);
    continue;
  }
  const msg = failed.message;
  // Positive steps say "expected X, got Y"; negative ones (expectNoReported,
  // expectNoTelemetry) "expected no ... matching ..., but one came ...: <the value>".
  if (!/expected/i.test(msg) || !/(got|actual|but one came)/i.test(msg)) {
    problem(`${doc.name}: the failure message of "${failed.name}" does not show expected and actual values: ${JSON.stringify(msg)}`);
  }
  for (const text of want.messageIncludes ?? []) {
    if (!msg.includes(text)) problem(`${doc.name}: the failure message of "${failed.name}" lacks ${JSON.stringify(text)}: ${JSON.stringify(msg)}`);
  }
  if (suite.cases.slice(0, failedAt).some((c) => c.status !== 'pass')) {
    problem(`${doc.name}: steps before "${failed.name}" did not all pass`);
  }
  const notSkipped = suite.cases.slice(failedAt + 1).filter((c) => c.status !== 'skip');
  if (notSkipped.length) problem(`${doc.name}: steps after the failed one are not reported as skipped: ${notSkipped.map((c) => c.name).join(', ')}`);
  process.stdout.write(`ok   ${doc.name}: fails at "${failed.name}" as intended\n` +
    `     ${msg.split('\n')[0].slice(0, 300)}\n`);
}
for (const f of expect.failures) {
  if (!scenarios.some((s) => s.doc.name === f.scenario)) problem(`bad expectation: no scenario named "${f.scenario}"`);
}

if (problems.length) {
  process.stdout.write(`\nFAILED (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n`);
  for (const p of problems) process.stdout.write(`  - ${p}\n`);
  const log = join(work, 'report', 'agent.log');
  process.stdout.write(`  (reports kept in ${work}${existsSync(log) ? `; agent log ${log}` : ''})\n`);
  process.exit(1);
}
if (!args.keep) rmSync(work, { recursive: true, force: true });
process.stdout.write(`PASS ${basename(scenarioDir)} with ${basename(args.agentScript)} (${seconds} s)\n`);
