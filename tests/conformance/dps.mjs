// Helpers of the DPS suites: run the provisioning SDKs in a child process that trusts the
// hub's CA (fixtures/dps-worker.mjs), make enrollments over the control API, derive a group
// member's key as the SDKs and the DPS docs do.
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HERE } from './hub.mjs';

const run = promisify(execFile);

/** Run one worker job; resolves to its {ok, value | error}. */
export async function worker(hub, job) {
  const { stdout } = await run(process.execPath, [join(HERE, 'fixtures', 'dps-worker.mjs'), JSON.stringify(job)], {
    env: { ...process.env, NODE_EXTRA_CA_CERTS: hub.info.caFile },
    timeout: 60000,
  });
  const line = stdout.trim().split('\n').pop();
  return JSON.parse(line);
}

/** Register with the device SDK: transport 'mqtt' or 'http'; `key` (symmetric key) or
 * `cert` and `certKey` (PEM, X.509 attestation with azure-iot-security-x509). */
export function register(hub, { transport, host, registrationId, key, cert, certKey, payload }) {
  return worker(hub, {
    op: 'register', transport, host, idScope: hub.info.idScope, registrationId, key, cert, certKey, payload,
  });
}

/** base64(HMAC-SHA256(base64decode(groupKey), registrationId)). */
export function deriveKey(groupKey, registrationId) {
  return createHmac('sha256', Buffer.from(groupKey, 'base64')).update(registrationId).digest('base64');
}

/** Create an enrollment (collection 'enrollments' or 'enrollmentGroups') over the control API. */
export function enroll(svc, collection, id, body) {
  return svc.ok({ command: 'dpsPut', collection, id, body });
}
