#!/usr/bin/env node
// The reference security agent with the C agent's timing: it sends on its configured (real-time)
// cadence and applies desired changes only every 10 s, the C agent's twin update period, both
// scaled by TWINHUB_TIME_SCALE. Passes every scenario in scenarios/security-module/ whose bounds
// leave slack for that period (scenarios/README.md).
import { runSecurityAgent } from './security-agent.mjs';

await runSecurityAgent({ name: 'security-agent-periodic', applyPeriodMs: 10000 });
