// Real OpenFeature clients against a running `sluice serve`: the server SDK with the OFREP provider
// (single-flag endpoint) and the web SDK with the OFREP web provider (bulk endpoint, ETag / 304, and the
// SSE configuration-changed event after an admin write). Driven by crates/sluice/tests/clients.rs.
//
// env: SLUICE_URL, SDK_TOKEN, ADMIN_TOKEN. Exit 0 when every check holds; prints the failure otherwise.
import { EventSource } from 'eventsource';
import { OpenFeature as ServerOF } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';
import { OpenFeature as WebOF, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';
import assert from 'node:assert/strict';

const BASE_URL = process.env.SLUICE_URL;
const SDK = ['Authorization', `Bearer ${process.env.SDK_TOKEN}`];
const ADMIN = { Authorization: `Bearer ${process.env.ADMIN_TOKEN}`, 'Content-Type': 'application/json' };
assert.ok(BASE_URL && process.env.SDK_TOKEN && process.env.ADMIN_TOKEN, 'SLUICE_URL, SDK_TOKEN, ADMIN_TOKEN are required');

// The web provider uses the global EventSource (Node has none). This one also says when its stream is
// open: the server subscribes the stream before it answers, so a write after `open` is never missed, while
// a write racing the provider's connect could be (a change stream has no replay).
let streamOpened;
const streamOpen = new Promise(resolve => { streamOpened = resolve; });
globalThis.EventSource = class extends EventSource {
  constructor(...args) {
    super(...args);
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

async function serverSdk() {
  await ServerOF.setProviderAndWait(new OFREPProvider({ baseUrl: BASE_URL, headers: [SDK] }));
  const client = ServerOF.getClient('sluice-ofrep-server');
  const ctx = { targetingKey: 'user-1' };

  const b = await client.getBooleanDetails('checkout_redesign', false, ctx);
  assert.equal(b.errorCode, undefined, `boolean: ${b.errorCode} ${b.errorMessage}`);
  assert.equal(b.value, true);
  assert.equal(b.variant, 'on');

  const s = await client.getStringDetails('stage_validation', 'off', ctx);
  assert.equal(s.errorCode, undefined, `string: ${s.errorCode} ${s.errorMessage}`);
  assert.equal(s.value, 'enforce');
  assert.equal(s.variant, 'enforce');

  const missing = await client.getBooleanDetails('no_such_flag', true, ctx);
  assert.equal(missing.value, true);
  assert.equal(missing.errorCode, 'FLAG_NOT_FOUND');

  const killed = await client.getBooleanDetails('killed', true, ctx);
  assert.equal(killed.errorCode, undefined, `disabled: ${killed.errorCode} ${killed.errorMessage}`);
  assert.equal(killed.value, false, 'a disabled flag serves its off value');
  assert.equal(killed.reason, 'DISABLED');

  const mismatch = await client.getNumberDetails('checkout_redesign', 42, ctx);
  assert.equal(mismatch.value, 42);
  assert.equal(mismatch.errorCode, 'TYPE_MISMATCH');
  await ServerOF.close();
  console.log('server SDK: ok');
}

async function webSdk() {
  const statuses = [];
  const recordingFetch = async (input, init) => {
    const response = await fetch(input, init);
    // The provider passes a Request object.
    const url = typeof input === 'string' ? input : input.url;
    if (url.includes('/ofrep/v1/evaluate/flags')) statuses.push(response.status);
    return response;
  };
  const provider = new OFREPWebProvider({
    baseUrl: BASE_URL,
    headers: [SDK],
    cacheMode: 'disabled',
    fetchImplementation: recordingFetch,
  });
  const client = WebOF.getClient();
  const changed = new Promise((resolve) => client.addHandler(ProviderEvents.ConfigurationChanged, resolve));

  await WebOF.setProviderAndWait(provider, { targetingKey: 'user-1', plan: 'free' });
  assert.equal(client.getBooleanValue('checkout_redesign', false), true);
  assert.equal(client.getStringValue('stage_validation', 'off'), 'enforce');
  assert.equal(client.getBooleanDetails('no_such_flag', true).errorCode, 'FLAG_NOT_FOUND');

  // Same targeting key, an attribute no flag reads: the answer is the same, so the server says 304.
  await WebOF.setContext({ targetingKey: 'user-1', plan: 'pro' });
  assert.deepEqual(statuses, [200, 304], `bulk statuses ${statuses}`);

  // An admin write reaches the provider through the SSE stream; it refetches and sees the new value.
  await within(streamOpen, 15000, 'open change stream');
  const write = await fetch(`${BASE_URL}/api/v1/flags/checkout_redesign/ramp?reason=ofrep-web-test`, {
    method: 'POST', headers: ADMIN, body: JSON.stringify({ percent: 0 }),
  });
  assert.equal(write.status, 200, `admin write: ${write.status}`);
  const details = await within(changed, 15000, 'ConfigurationChanged event');
  assert.ok(details, 'configuration-changed details');
  assert.equal(client.getBooleanValue('checkout_redesign', true), false, 'the new value after the change');
  await WebOF.close();
  console.log('web SDK: ok');
}

try {
  await serverSdk();
  await webSdk();
  process.exit(0);
} catch (e) {
  console.error(e);
  process.exit(1);
}
