#!/usr/bin/env node
// Reference security agent: passes every scenario in scenarios/security-module/ (contract in
// scenarios/README.md). Run by `twinhub run` with the azureiotsecurity module's connection string.
import { runSecurityAgent } from './security-agent.mjs';

await runSecurityAgent({ name: 'security-agent-ref' });
