#!/usr/bin/env node
// Reference device agent: passes every scenario in scenarios/device-agent/ (contract in
// scenarios/README.md). Run by `twinhub run`, which sets TWINHUB_CONNECTION_STRING and the CA.
import { runDeviceAgent } from './device-agent.mjs';

await runDeviceAgent({ name: 'device-agent-ref' });
