#!/usr/bin/env node
// A deliberately wrong security agent, for checking that scenarios/security-module/ catches
// mistakes. It differs from the reference agent in exactly two ways:
//   1. it takes any JSON value as a setting's value without checking its type, so
//      {"snapshotFrequency": {"value": 42}} is applied and reported: 04-invalid-value.json fails
//      at "snapshotFrequency {value: 42} is not applied";
//   2. its messages are not marked as security messages (no $.ifid): 06-security-message.json
//      fails at "carries the security interface id".
import { runSecurityAgent } from './security-agent.mjs';

await runSecurityAgent({ name: 'security-agent-wrong', lenientTypes: true, markAsSecurity: false });
