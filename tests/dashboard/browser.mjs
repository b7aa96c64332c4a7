// The dashboard in a real browser (playwright-core driving Debian's Chromium), run by
// crates/sluice/tests/dashboard.rs against a live server. Prints one line per check; exits non-zero on the
// first failure. Screenshots go to $ARTEFACTS.
import { chromium } from 'playwright-core';
import { createRequire } from 'module';
import fs from 'fs';

const require = createRequire(import.meta.url);
const { SLUICE_URL: url, OPERATOR_TOKEN, VIEWER_TOKEN, ADVANCING, STEADY, ARTEFACTS, CHROMIUM } = process.env;
const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

function check(ok, what) {
  if (!ok) throw new Error(`FAILED: ${what}`);
  console.log(`ok: ${what}`);
}

async function login(browser, token, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 }, ...options });
  const page = await context.newPage();
  const errors = [];
  // Every write the page sends, so that a "nothing was sent" check sees what would have been.
  const writes = [];
  page.on('request', r => { if (r.method() !== 'GET') writes.push(`${r.method()} ${new URL(r.url()).pathname}`); });
  page.on('pageerror', e => errors.push(e.message));
  // Refused requests (the 401 before login, the forged writes below) are expected; script errors are not.
  page.on('console', m => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text()); });
  await page.goto(`${url}/`);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('navigation', { name: 'Sections' }).waitFor();
  return { context, page, errors, writes };
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
try {
  // The login page, before anyone logs in.
  {
    const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
    const page = await context.newPage();
    await page.goto(`${url}/`);
    await page.getByRole('heading', { name: 'Log in to Sluice' }).waitFor();
    await page.screenshot({ path: `${ARTEFACTS}/dashboard-login.png` });
    await page.getByLabel('Token').fill('slc_not_a_token');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByText('Not logged in').waitFor();
    check(true, 'an unknown token is refused at the login form');
    await context.close();
  }

  const op = await login(browser, OPERATOR_TOKEN);
  const page = op.page;
  const cookies = await op.context.cookies();
  const session = cookies.find(c => c.name === 'sluice_session');
  check(session && session.httpOnly && session.sameSite === 'Strict', 'the session cookie is HttpOnly and SameSite=Strict');
  check(!(await page.evaluate(() => document.cookie)).includes('sluice_session'), 'the page\'s script cannot read the session cookie');

  // First load, timed by the browser: the page, its script and style, the session and the rollouts list.
  const started = Date.now();
  await page.goto(`${url}/#/rollouts`);
  await page.getByRole('heading', { name: 'Rollouts' }).waitFor();
  await page.locator('table').first().waitFor();
  const firstLoadMs = Date.now() - started;
  console.log(`first load: ${firstLoadMs} ms (rollouts list rendered)`);
  await page.screenshot({ path: `${ARTEFACTS}/dashboard-rollouts.png`, fullPage: true });

  await page.goto(`${url}/#/flags`);
  await page.getByRole('heading', { name: /^Flags/ }).waitFor();
  await page.screenshot({ path: `${ARTEFACTS}/dashboard-flags.png`, fullPage: true });
  // Environments: each flag's state in every one side by side, and a switcher that narrows the rollouts.
  const heads = await page.locator('thead th').allTextContents();
  check(heads.includes('production') && heads.includes('staging'), `the flags page shows every environment side by side: ${heads}`);
  const stagingCells = await page.locator('tbody tr td:nth-child(4)').allTextContents();
  check(stagingCells.length === 3 && stagingCells.every(t => t.includes('off')), `a new environment has every flag off: ${stagingCells}`);
  await page.getByLabel('Environment').selectOption('staging');
  await page.goto(`${url}/#/rollouts`);
  await page.getByRole('heading', { name: 'Rollouts in staging' }).waitFor();
  check((await page.locator('table').count()) === 0, 'the switcher narrows the rollouts to its environment (none in staging)');
  await page.getByLabel('Environment').selectOption('');
  await page.getByRole('heading', { name: 'Rollouts', exact: true }).waitFor();

  // A rollout advances while we watch, without a reload. It was paused at start; resumed from the page.
  await page.goto(`${url}/#/rollouts/${ADVANCING}`);
  await page.locator('h1 code', { hasText: ADVANCING }).waitFor();
  await page.evaluate(() => { window.__notReloaded = true; });
  const phaseBefore = await page.locator('ol.phases li.now strong').textContent();
  await page.getByRole('button', { name: 'Resume' }).click();
  const resume = page.getByRole('dialog');
  await resume.getByLabel(/Why/).fill('watching it from the dashboard');
  await resume.getByRole('button', { name: 'Resume' }).click();
  await resume.waitFor({ state: 'hidden' });
  await page.waitForFunction(before => {
    const now = document.querySelector('ol.phases li.now strong');
    const state = document.querySelector('#state');
    return (now && now.textContent !== before) || (state && /completed/.test(state.textContent));
  }, phaseBefore, { timeout: 20000 });
  check(await page.evaluate(() => window.__notReloaded === true), `the rollout moved on from "${phaseBefore}" on screen without a reload`);
  await page.screenshot({ path: `${ARTEFACTS}/dashboard-rollout-advancing.png`, fullPage: true });

  // Roll the other one back, as an operator, with a reason.
  await page.goto(`${url}/#/rollouts/${STEADY}`);
  await page.locator('h1 code', { hasText: STEADY }).waitFor();
  await page.getByRole('button', { name: 'Roll back' }).waitFor();
  await page.screenshot({ path: `${ARTEFACTS}/dashboard-rollout.png`, fullPage: true });
  // By keyboard alone: Tab reaches the decision buttons, Enter opens one, Escape closes it unsent.
  let reached = false;
  for (let i = 0; i < 40 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement?.textContent === 'Roll back');
  }
  check(reached, 'Tab reaches the Roll back button');
  // The page re-renders at each of the rollout's ticks (every second); the keyboard user keeps their place.
  await page.evaluate(() => { window.__focusedButton = document.activeElement; });
  await page.waitForFunction(() => {
    const now = [...document.querySelectorAll('button')].find(b => b.textContent === 'Roll back');
    return now && now !== window.__focusedButton;
  }, null, { timeout: 15000 });
  check(await page.evaluate(() => document.activeElement?.textContent === 'Roll back'), 'focus stays on Roll back when the live page re-renders');
  await page.keyboard.press('Enter');
  await page.getByRole('dialog').waitFor();
  check(await page.evaluate(() => document.activeElement?.id === 'reason'), 'the dialog opens with the reason field focused');
  await page.keyboard.type('typed, then cancelled');
  const writesBefore = op.writes.length;
  await page.keyboard.press('Escape');
  await page.getByRole('dialog').waitFor({ state: 'hidden' });
  check(op.writes.length === writesBefore && !(await page.locator('#state').textContent()).includes('rolled back'),
    `Escape closes the dialog and sends nothing: ${op.writes.slice(writesBefore).join(', ')}`);
  await page.getByRole('button', { name: 'Roll back' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByRole('button', { name: 'Roll back' }).click();
  await dialog.getByText('A reason is required').waitFor();
  check(true, 'a decision without a reason is not sent');
  await dialog.getByLabel(/Why/).fill('checkout errors in the canary region');
  await dialog.getByRole('button', { name: 'Roll back' }).click();
  await page.locator('#state', { hasText: 'rolled back' }).waitFor({ timeout: 15000 });
  check(true, 'the rollback shows as the rollout\'s state');
  check(op.writes.slice(writesBefore).filter(w => w.endsWith('/rollback')).length === 1,
    `the watch that saw nothing after Escape sees the one rollback sent: ${op.writes.slice(writesBefore).join(', ')}`);
  await page.goto(`${url}/#/audit?entity=rollout:${encodeURIComponent(STEADY)}`);
  const row = page.locator('tr', { hasText: 'rollout.rolled_back' });
  await row.first().waitFor();
  const rowText = await row.first().textContent();
  check(rowText.includes('olivia') && rowText.includes('checkout errors in the canary region'), `the audit log has the rollback under the operator's name with the reason: ${rowText}`);
  await page.locator('#chain', { hasText: 'chain intact' }).waitFor();
  check(true, 'the audit page shows the chain verified');
  await page.screenshot({ path: `${ARTEFACTS}/dashboard-audit.png`, fullPage: true });

  // A write with the cookie but without the CSRF value is refused, even for an operator.
  const forgedByOperator = await page.evaluate(async id => (await fetch(`/api/v1/rollouts/${id}/pause`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"reason":"forged"}' })).status, ADVANCING);
  check(forgedByOperator === 403, `a cookie write without the CSRF header is refused (${forgedByOperator})`);
  check(op.errors.length === 0, `no script errors on the operator's pages: ${op.errors.join('; ')}`);

  // A viewer sees no buttons, and a write is refused even with the CSRF value.
  const viewer = await login(browser, VIEWER_TOKEN);
  await viewer.page.goto(`${url}/#/rollouts/${ADVANCING}`);
  await viewer.page.locator('h1 code', { hasText: ADVANCING }).waitFor();
  check((await viewer.page.getByRole('button').allTextContents()).every(t => t === 'Log out'), 'a viewer sees no decision buttons');
  const forgedByViewer = await viewer.page.evaluate(async id => {
    const s = await (await fetch('/ui/session')).json();
    return (await fetch(`/api/v1/rollouts/${id}/pause`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-sluice-csrf': s.csrf }, body: '{"reason":"forged"}' })).status;
  }, ADVANCING);
  check(forgedByViewer === 403, `a viewer's write is refused (${forgedByViewer})`);

  // Leaving a page before its answer arrives: the list's answer is held back 1.5 s, the user opens a
  // rollout meanwhile, and the late list must not paint over the rollout on screen.
  const isList = u => new URL(u).pathname === '/api/v1/rollouts';
  await viewer.page.route(isList, async r => { await new Promise(res => setTimeout(res, 1500)); await r.continue(); });
  const lateList = viewer.page.waitForResponse(r => isList(r.url()));
  await viewer.page.goto(`${url}/#/rollouts`);
  await viewer.page.goto(`${url}/#/rollouts/${STEADY}`);
  await viewer.page.locator('h1 code', { hasText: STEADY }).waitFor();
  await (await lateList).finished();
  // Two frames after the late answer's body is in: time enough for its render to have painted.
  await viewer.page.evaluate(() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))));
  check(await viewer.page.locator('h1 code', { hasText: STEADY }).isVisible(),
    'a late answer for a page already left does not paint over the page on screen');
  await viewer.page.unroute(isList);

  // axe-core on the main pages (its script is injected, so this context bypasses the page's CSP).
  const ax = await login(browser, OPERATOR_TOKEN, { bypassCSP: true });
  // Each page is known by what only it shows: the previous page's heading must not satisfy the wait.
  const pages = [
    ['#/rollouts', p => p.getByRole('heading', { name: 'Rollouts', exact: true })],
    ['#/flags', p => p.getByRole('heading', { name: /^Flags/ })],
    [`#/rollouts/${ADVANCING}`, p => p.locator('h1 code', { hasText: ADVANCING })],
    [`#/rollouts/${STEADY}`, p => p.locator('h1 code', { hasText: STEADY })],
    ['#/audit', p => p.locator('#chain')],
  ];
  for (const [path, shown] of pages) {
    await ax.page.goto(`${url}/${path}`);
    await shown(ax.page).waitFor();
    await ax.page.addScriptTag({ content: axeSource });
    const result = await ax.page.evaluate(async () => (await window.axe.run(document)).violations.map(v => `${v.id}: ${v.help} (${v.nodes.length})`));
    check(result.length === 0, `axe-core finds no violations on ${path}: ${result.join('; ')}`);
  }
  console.log(JSON.stringify({ firstLoadMs }));
} finally {
  await browser.close();
}
