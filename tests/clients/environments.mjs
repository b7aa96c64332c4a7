// Real OpenFeature clients, one per environment token, against a running `sluice serve` with `staging`
// and `production`: the server SDK with the OFREP provider gets each environment's answer for the same flag
// and context; the web SDK with the OFREP web provider (bulk endpoint and the SSE stream its bulk answer
// names) hears a production change and never a staging one. Driven by crates/sluice/tests/clients.rs.
//
// env: SLUICE_URL, PROD_TOKEN, STAGING_TOKEN, ADMIN_TOKEN. Exit 0 when every check holds.
import { EventSource } from 'eventsource';
import { OpenFeature as ServerOF } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';
import { OpenFeature as WebOF, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';
import assert from 'node:assert/strict';

const BASE_URL = process.env.SLUICE_URL;
const { PROD_TOKEN, STAGING_TOKEN, ADMIN_TOKEN } = process.env;
const ADMIN = { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' };
assert.ok(BASE_URL && PROD_TOKEN && STAGING_TOKEN && ADMIN_TOKEN, 'SLUICE_URL and the three tokens are required');

let streamOpened;
const streamOpen = new Promise(resolve => { streamOpened = resolve; });
const streamUrls = [];
globalThis.EventSource = class extends EventSource {
  constructor(url, ...rest) {
    super(url, ...rest);
    streamUrls.push(String(url));
    this.addEventListener('open', () => streamOpened());
  }
};

function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

async function admin(path, body) {
  const r = await fetch(`${BASE_URL}${path}`, { method: 'POST', headers: ADMIN, body: JSON.stringify(body ?? {}) });
  assert.equal(r.status, 200, `${path}: ${r.status} ${await r.text()}`);
}

async function serverSdk() {
  const bearer = token => [['Authorization', `Bearer ${token}`]];
  await ServerOF.setProviderAndWait('production', new OFREPProvider({ baseUrl: BASE_URL, headers: bearer(PROD_TOKEN) }));
  await ServerOF.setProviderAndWait('staging', new OFREPProvider({ baseUrl: BASE_URL, headers: bearer(STAGING_TOKEN) }));
  const ctx = { targetingKey: 'user-1' };
  const prod = await ServerOF.getClient('production').getStringDetails('stage_validation', 'off', ctx);
  const staging = await ServerOF.getClient('staging').getStringDetails('stage_validation', 'off', ctx);
  assert.equal(prod.errorCode, undefined, `production: ${prod.errorCode} ${prod.errorMessage}`);
  assert.equal(prod.value, 'warn', 'production serves warn');
  assert.equal(staging.value, 'enforce', 'staging serves enforce');
  await ServerOF.close();
  console.log('server SDK per environment: ok');
}

async function webSdk() {
  const provider = new OFREPWebProvider({
    baseUrl: BASE_URL,
    headers: [['Authorization', `Bearer ${PROD_TOKEN}`]],
    cacheMode: 'disabled',
  });
  const client = WebOF.getClient();
  let changes = 0;
  let changed;
  client.addHandler(ProviderEvents.ConfigurationChanged, () => { changes += 1; if (changed) changed(); });
  await WebOF.setProviderAndWait(provider, { targetingKey: 'user-1' });
  assert.equal(client.getStringValue('stage_validation', 'off'), 'warn');
  await within(streamOpen, 15000, 'open change stream');
  assert.ok(streamUrls.some(u => u.includes('env=production')), `the stream is production's: ${streamUrls}`);

  // A staging change: the production client hears nothing. An absence has no event to wait for, so this
  // waits a fixed window (the same write reaches a listening client in milliseconds; the production change
  // below, heard within it, shows the stream is live).
  await admin('/api/v1/flags/stage_validation/ramp?env=staging&reason=env-test', { percent: 0 });
  await new Promise(resolve => setTimeout(resolve, 1500));
  assert.equal(changes, 0, 'a staging change reached a production client');
  assert.equal(client.getStringValue('stage_validation', 'off'), 'warn');

  // A production change reaches it.
  const heard = new Promise(resolve => { changed = resolve; });
  await admin('/api/v1/flags/stage_validation/ramp?env=production&reason=env-test', { percent: 100 });
  await within(heard, 15000, 'ConfigurationChanged event');
  assert.equal(client.getStringValue('stage_validation', 'off'), 'enforce', 'the new production value');
  await WebOF.close();
  console.log('web SDK per environment: ok');
}

try {
  await serverSdk();
  await webSdk();
  process.exit(0);
} catch (e) {
  console.error(e);
  process.exit(1);
}
