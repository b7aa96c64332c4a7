// A small service using the OpenFeature server SDK with the OFREP provider that reports each request's
// outcome to Sluice's built-in metrics: an OpenFeature hook records the variant and reason each
// evaluation served, the request handler adds ok/error and latency, and a batch goes to
// POST /api/v1/metrics. Driven by crates/sluice/tests/clients.rs.
//
// env: SLUICE_URL, SDK_TOKEN. Prints `canary requests: N` (those served `on` by the split) and exits 0.
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';
import assert from 'node:assert/strict';

const BASE_URL = process.env.SLUICE_URL;
const TOKEN = process.env.SDK_TOKEN;
assert.ok(BASE_URL && TOKEN, 'SLUICE_URL and SDK_TOKEN are required');

// What each evaluation served, keyed by the request it belongs to.
const served = new Map();
const outcomes = {
  // `finally` runs after every evaluation, successful or not, with the details OFREP answered.
  finally(hookContext, details) {
    const request = hookContext.context.requestId;
    served.set(request, {
      flag: hookContext.flagKey,
      variant: details.variant,
      reason: details.reason,
      key: hookContext.context.targetingKey,
    });
  },
};

await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl: BASE_URL, headers: [['Authorization', `Bearer ${TOKEN}`]] }));
OpenFeature.addHooks(outcomes);
const client = OpenFeature.getClient('checkout-service');

const observations = [];
let canary = 0;
for (let i = 0; i < 200; i++) {
  const requestId = `req-${i}`;
  const started = performance.now();
  const redesign = await client.getBooleanValue('checkout_redesign', false, { targetingKey: `user-${i % 50}`, requestId });
  // The request itself: the redesign fails one request in ten in this test.
  const ok = !(redesign && i % 10 === 0);
  const s = served.get(requestId);
  assert.ok(s && s.variant, `the hook saw request ${requestId}`);
  if (s.variant === 'on' && s.reason === 'SPLIT') canary++;
  observations.push({ ...s, ok, latency_ms: performance.now() - started, values: { basket_items: i % 7 } });
}

const answer = await fetch(`${BASE_URL}/api/v1/metrics`, {
  method: 'POST',
  headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
  body: JSON.stringify({ observations }),
});
const body = await answer.json();
assert.equal(answer.status, 202, JSON.stringify(body));
assert.equal(body.accepted, 200);
await OpenFeature.close();
console.log(`canary requests: ${canary}`);
