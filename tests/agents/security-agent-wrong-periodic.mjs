#!/usr/bin/env node
// security-agent-wrong.mjs's two defects with security-agent-periodic.mjs's timing (desired
// changes applied every 10 s, scaled by TWINHUB_TIME_SCALE): the suite must still fail it at
// 04 "snapshotFrequency {value: 42} is not applied" and 06 "carries the security interface id",
// which needs every "not applied" window to be longer than the update period.
import { runSecurityAgent } from './security-agent.mjs';

await runSecurityAgent({
  name: 'security-agent-wrong-periodic', lenientTypes: true, markAsSecurity: false, applyPeriodMs: 10000,
});
