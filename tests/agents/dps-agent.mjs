// The DPS agent of scenarios/dps-agent/ (contract in scenarios/README.md, P1), right
// (dps-agent-ref.mjs) or deliberately wrong (dps-agent-wrong.mjs). It starts with no
// connection string: it registers with the provisioning service
// (azure-iot-provisioning-device over MQTT, symmetric key), connects to the hub it was
// assigned with the device id it was given, reads its twin and reports.
//
// Environment: DPS_PROVISIONING_HOST (host[:port]), DPS_ID_SCOPE, DPS_REGISTRATION_ID, and
// DPS_SYMMETRIC_KEY (an individual enrollment's key) or DPS_GROUP_KEY (an enrollment group's
// key: the device key is derived from it, as the SDK samples do). The CA comes through
// NODE_EXTRA_CA_CERTS, which `twinhub run` sets: the provisioning transports take no CA option.
import { createHmac } from 'node:crypto';
import { Client, Mqtt, applyCa, fail, log, onShutdown, requireSdk, setAgentName, sleep } from './common.mjs';

const { ProvisioningDeviceClient } = requireSdk('azure-iot-provisioning-device');
const { Mqtt: ProvisioningMqtt } = requireSdk('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = requireSdk('azure-iot-security-symmetric-key');

/**
 * Run the agent. `signWithGroupKey`: the wrong agent's defect, signing with the group key
 * itself instead of the member key derived from it (the hub refuses it with 401).
 */
export async function runDpsAgent({ name, signWithGroupKey = false }) {
  setAgentName(name);
  const env = (v) => process.env[v] || fail(`${v} is not set`);
  const host = env('DPS_PROVISIONING_HOST');
  const idScope = env('DPS_ID_SCOPE');
  const registrationId = env('DPS_REGISTRATION_ID');
  const key = process.env.DPS_SYMMETRIC_KEY
    || (signWithGroupKey ? env('DPS_GROUP_KEY') : null)
    || createHmac('sha256', Buffer.from(env('DPS_GROUP_KEY'), 'base64')).update(registrationId).digest('base64');

  const provisioning = ProvisioningDeviceClient.create(host, idScope, new ProvisioningMqtt(),
    new SymmetricKeySecurityClient(registrationId, key));
  provisioning.setProvisioningPayload({ agent: name, version: '1.0.0' });
  let state;
  // A refused registration is retried every 5 s, as a real agent keeps trying.
  while (!state) {
    try {
      state = await provisioning.register();
    } catch (err) {
      log(`registration failed: ${err.constructor?.name}: ${err.message}; retrying in 5 s`);
      await sleep(5000);
    }
}
log(`assigned to ${state.assignedHub} as ${state.deviceId} (${state.substatus})`);

const client = Client.fromConnectionString(
  `HostName=${state.assignedHub};DeviceId=${state.deviceId};SharedAccessKey=${key}`, Mqtt);
await applyCa(client);
onShutdown(() => client.close());
await client.open();
const twin = await client.getTwin();
const interval = twin.properties.desired.telemetryInterval;
const patch = {
  status: 'running',
  provisioning: { assignedHub: state.assignedHub, deviceId: state.deviceId, substatus: state.substatus },
};
if (interval !== undefined) {
  patch.telemetryInterval = { value: interval, ac: 200, av: twin.properties.desired.$version };
}
await new Promise((resolve, reject) => twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve())));
log('reported', patch);
}
