#!/usr/bin/env node
// A deliberately wrong device agent, for checking that scenarios/device-agent/ catches mistakes.
// It differs from the reference agent in exactly two ways:
//   1. it does not read its twin again after a reconnection, so a desired patch made while it
//      was offline is never applied: 03-offline-patch.json fails at
//      "applies the patch made while it was offline";
//   2. its writable-property acknowledgements lack "av" (the desired version they answer):
//      02-desired-properties.json fails at "acknowledges telemetryInterval 3 with value, ac and av".
import { runDeviceAgent } from './device-agent.mjs';

await runDeviceAgent({ name: 'device-agent-wrong', reconcileOnReconnect: false, ackVersion: false });
