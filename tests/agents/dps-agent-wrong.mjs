#!/usr/bin/env node
// Deliberately wrong DPS agent: signs its registration with the enrollment group's key
// instead of the member key derived from it, a common mistake; the hub refuses it (401) and
// scenarios/dps-agent/ fails at "registers with the group's derived key"
// (tests/suites/dps-agent-wrong.expect.json).
import { runDpsAgent } from './dps-agent.mjs';

await runDpsAgent({ name: 'dps-agent-wrong', signWithGroupKey: true });
