// Dashboards' load on a server, without a browser's CPU: N clients that do what an open dashboard page
// does — follow /api/v1/stream, and after each event refetch what the rollout page shows (the rollout,
// its decisions, its audit entries). Also times a real page's first load with playwright-core + Chromium.
// Usage: node benches/http/dashboards.mjs follow URL TOKEN ROLLOUT_ID N SECONDS
//        node benches/http/dashboards.mjs first-load URL TOKEN CHROMIUM ROLLOUT_ID
import { EventSource } from 'eventsource';

const [mode, url, token, ...rest] = process.argv.slice(2);
const auth = { authorization: `Bearer ${token}` };

if (mode === 'follow') {
  const [id, n, seconds] = rest;
  let events = 0, fetches = 0;
  const sources = [];
  for (let i = 0; i < Number(n); i++) {
    const source = new EventSource(`${url}/api/v1/stream`, { fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, ...auth } }) });
    let pending = null;
    // As the page does: only its own rollout's events, at most one refetch per 300 ms.
    const refetch = e => {
      events++;
      if (e.type === 'rollout' && JSON.parse(e.data).rollout?.id !== id) return;
      if (pending) return;
      pending = setTimeout(async () => {
        pending = null;
        await Promise.all([
          fetch(`${url}/api/v1/rollouts/${id}`, { headers: auth }).then(r => r.text()),
          fetch(`${url}/api/v1/rollouts/${id}/decisions?limit=5000`, { headers: auth }).then(r => r.text()),
          fetch(`${url}/api/v1/audit?entity=rollout:${id}&limit=500`, { headers: auth }).then(r => r.text()),
        ]);
        fetches += 3;
      }, 300);
    };
    source.addEventListener('rollout', refetch);
    source.addEventListener('change', refetch);
    sources.push(source);
  }
  await new Promise(r => setTimeout(r, Number(seconds) * 1000));
  sources.forEach(s => s.close());
  console.log(JSON.stringify({ dashboards: Number(n), events, fetches }));
  process.exit(0);
} else if (mode === 'first-load') {
  const [chromiumPath, id] = rest;
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${url}/`);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('navigation', { name: 'Sections' }).waitFor();
  const times = {};
  for (const [name, hash, ready] of [['rollouts', '#/rollouts', 'table'], ['flags', '#/flags', 'table'], ['rollout', `#/rollouts/${id}`, 'ol.phases']]) {
    const runs = [];
    for (let i = 0; i < 7; i++) {
      const started = Date.now();
      await page.goto(`${url}/${hash}`);
      await page.reload();
      await page.locator(ready).first().waitFor();
      runs.push(Date.now() - started);
    }
    runs.sort((a, b) => a - b);
    times[name] = { median_ms: runs[3], max_ms: runs[6] };
  }
  await browser.close();
  console.log(JSON.stringify(times));
}
