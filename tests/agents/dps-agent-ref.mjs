#!/usr/bin/env node
// Reference DPS agent: passes every scenario in scenarios/dps-agent/ (contract P1 in
// scenarios/README.md). Run by `twinhub run` with the scenario's DPS_* environment.
import { runDpsAgent } from './dps-agent.mjs';

await runDpsAgent({ name: 'dps-agent-ref' });
