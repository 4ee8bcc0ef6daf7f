// Drives headless Chromium (Debian's, never a downloaded one) for tests/browser.rs.
//
//   node driver.mjs <mode> <base-url> [screenshot.png]
//
// Prints one JSON document with what the page saw; the Rust test asserts on it.
// Every wait is bounded, and the browser is always closed.
import { chromium } from 'playwright-core';

const [mode, base, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
// The chat server's admin credential, for cutting its streams.
const adminToken = process.env.ADMIN_TOKEN || '';

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // Playwright gives each launch a fresh, empty --user-data-dir.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    // The TLS tests serve a self-signed certificate made for the test.
    '--ignore-certificate-errors'],
});

// Every conformance case through EventSource (or, with `transport`
// 'fetch', the generated FetchEventSource), compressed with `coding` if it
// is not empty.
async function conformanceWith(page, coding, transport = '') {
  const cases = await (await fetch(`${base}/conformance/cases.json`)).json();
  const results = {};
  const codingParam = coding ? `&coding=${coding}` : '';
  const transportParam = transport ? `&transport=${transport}` : '';
  for (const [n, c] of cases.entries()) {
    const run = `browser-${transport || 'eventsource'}-${coding || 'plain'}-${n}`;
    await page.goto(`${base}/conformance/page?case=${c.name}&run=${run}${codingParam}${transportParam}`);
    // Done when the server's 204 has closed the source: a browser that kept
    // reconnecting, or saw more, would show it here.
    await page.waitForFunction(() => window.__done === true, null, { timeout: 15000 });
    results[c.name] = await page.evaluate(() => window.__events);
  }
  return results;
}

const modes = {
  // Every conformance case through the browser's own EventSource.
  async conformance(page) {
    return conformanceWith(page, '');
  },

  // The same, each stream compressed with one coding (the server uses only
  // that one, if Chromium offers it).
  async 'conformance-gzip'(page) {
    return conformanceWith(page, 'gzip');
  },
  async 'conformance-zstd'(page) {
    return conformanceWith(page, 'zstd');
  },

  // Every case through the generated module's fetch transport, in Chromium.
  async 'conformance-fetch'(page) {
    return conformanceWith(page, '', 'fetch');
  },

  // The basic example's page: pings, typed events, a per-user push.
  async basic(page) {
    await page.setViewportSize({ width: 1100, height: 420 });
    await page.goto(`${base}/`);
    await page.waitForFunction(() => document.querySelectorAll('#ping-log li').length >= 2, null, { timeout: 10000 });
    await page.waitForFunction(() => document.querySelectorAll('#dynamic-log li').length >= 2, null, { timeout: 10000 });
    await page.waitForFunction(() => document.getElementById('user-status').textContent === 'open', null, { timeout: 10000 });
    await page.fill('#message', 'hello from the browser test');
    await page.click('#send-form button');
    await page.waitForFunction(
      () => [...document.querySelectorAll('#user-log li')].some((li) => li.textContent === 'hello from the browser test'),
      null, { timeout: 10000 });
    const texts = (selector) => page.$$eval(selector, (items) => items.map((li) => li.textContent));
    const result = { pings: await texts('#ping-log li'), dynamic: await texts('#dynamic-log li'), user: await texts('#user-log li') };
    if (screenshot) await page.screenshot({ path: screenshot });
    return result;
  },

  // The chat page while the server cuts every stream: the browser reconnects by
  // itself with Last-Event-ID (the server records it) and the page must end
  // with each message once.
  // The chat page's compressed room stream across a rest: the server drops
  // its encoder after 5 s without an event (ending a zstd frame) and starts
  // a new one for the next; the page must show both messages.
  async 'chat-rest'(page) {
    const encodings = [];
    page.on('response', (response) => {
      if (response.url().includes('/rooms/general/events')) encodings.push(response.headers()['content-encoding'] || 'none');
    });
    await page.goto(`${base}/`);
    await page.waitForFunction(() => document.getElementById('status').textContent === 'live', null, { timeout: 10000 });
    const say = (text) => page.evaluate((text) => fetch('/rooms/general/messages', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'bot', text }),
    }), text);
    const shown = (text) => page.waitForFunction((text) => [...document.querySelectorAll('#messages li')]
      .some((li) => li.textContent.includes(text)), text, { timeout: 10000 });
    await say('before the rest');
    await shown('before the rest');
    await page.waitForTimeout(7000);
    await say('after the rest');
    await shown('after the rest');
    return { encodings };
  },

  async 'chat-resume'(page) {
    await page.goto(`${base}/`);
    await page.waitForFunction(() => document.getElementById('status').textContent === 'live', null, { timeout: 10000 });
    const total = 30;
    for (let n = 1; n <= total; n++) {
      await page.evaluate((n) => fetch('/rooms/general/messages', {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'bot', text: `m${n}` }),
      }), n);
      if (n % 7 === 0) {
        // Cut only a live stream: wait until the page has reconnected and caught up.
        await page.waitForFunction((n) => document.getElementById('status').textContent === 'live'
          && document.querySelectorAll('#messages li:not(.notice)').length >= n, n, { timeout: 10000 });
        await page.evaluate((token) => fetch('/admin/drop-streams', {
          method: 'POST', headers: { authorization: `Bearer ${token}` },
        }).then((res) => { if (res.status !== 204) throw new Error(`drop-streams: ${res.status}`); }), adminToken);
      }
    }
    await page.waitForFunction((total) => document.querySelectorAll('#messages li:not(.notice)').length >= total,
      total, { timeout: 20000 });
    // A typed `announcement` event, broadcast to every room, through the page's typed handler.
    await page.evaluate((token) => fetch('/admin/announce', {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ text: 'hello all' }),
    }).then((res) => { if (!res.ok) throw new Error(`announce: ${res.status}`); }), adminToken);
    await page.waitForFunction(() => [...document.querySelectorAll('#messages li.notice')]
      .some((li) => li.textContent === 'announcement: hello all'), null, { timeout: 10000 });
    await page.waitForTimeout(300); // anything extra (a duplicate) would arrive now
    const shown = await page.$$eval('#messages li', (items) => items.map((li) => ({ notice: li.className === 'notice', text: li.textContent })));
    return { shown };
  },

  // One EventSource for three rooms, cut by the server several times while
  // messages flow to every room: each message must arrive exactly once.
  async 'chat-many-rooms'(page) {
    await page.goto(`${base}/rooms`);
    await page.evaluate(() => {
      window.__seen = [];
      window.__opens = 0;
      const source = new EventSource('/rooms/events?rooms=general,random,dev');
      source.onopen = () => { window.__opens += 1; window.__live = true; };
      source.onerror = () => { window.__live = false; };
      source.addEventListener('said', (event) => {
        const said = JSON.parse(event.data);
        window.__seen.push(`${said.room}:${said.text}`);
      });
      source.addEventListener('reset', (event) => window.__seen.push(`reset:${event.data}`));
    });
    await page.waitForFunction(() => window.__live === true, null, { timeout: 10000 });
    const rooms = ['general', 'random', 'dev'];
    const total = 60;
    for (let n = 1; n <= total; n++) {
      const room = rooms[n % 3];
      await page.evaluate(([room, n]) => fetch(`/rooms/${room}/messages`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'bot', text: `m${n}` }),
      }), [room, n]);
      if (n % 12 === 0) {
        await page.waitForFunction((n) => window.__live === true && window.__seen.length >= n, n, { timeout: 10000 });
        await page.evaluate((token) => fetch('/admin/drop-streams', {
          method: 'POST', headers: { authorization: `Bearer ${token}` },
        }).then((res) => { if (res.status !== 204) throw new Error(`drop-streams: ${res.status}`); }), adminToken);
      }
    }
    await page.waitForFunction((total) => window.__seen.length >= total, total, { timeout: 20000 });
    await page.waitForTimeout(300); // anything extra (a duplicate) would arrive now
    return { seen: await page.evaluate(() => window.__seen), opens: await page.evaluate(() => window.__opens) };
  },

  // 204 tells EventSource to stop: no reconnection follows (the server counts).
  async 'stop-on-204'(page) {
    await page.goto(`${base}/rooms`);
    const readyState = await page.evaluate(() => new Promise((resolve) => {
      const source = new EventSource('/rooms/nowhere/events');
      source.onerror = () => setTimeout(() => resolve(source.readyState), 2500);
    }));
    return { readyState };
  },

  // Ten EventSources of one origin: how many receive anything within 3 s.
  async 'ten-sources'(page) {
    const encodings = [];
    page.on('response', (response) => {
      if (response.url().includes('/tick/')) encodings.push(response.headers()['content-encoding'] || 'none');
    });
    await page.goto(`${base}/`);
    await page.waitForTimeout(3000);
    const received = await page.evaluate(() => window.__received.size);
    const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    return { received, protocol, encodings };
  },

  // The chat's direct messages: log in, read the private stream over the
  // fetch transport (the token in a header), get one, hide the tab and get
  // one on its return, send one; then the operator ends every session, and
  // the reconnect's 401 stops it.
  async 'chat-direct'(page) {
    await page.goto(`${base}/`);
    await page.fill('#user', 'ana');
    await page.click('#login');
    await page.waitForFunction(() => document.getElementById('dm-status').textContent === 'live',
      null, { timeout: 10000 });
    const json = { 'content-type': 'application/json' };
    const bo = await (await fetch(`${base}/login`, {
      method: 'POST', headers: json, body: JSON.stringify({ user: 'bo' }),
    })).json();
    const sent = await fetch(`${base}/users/ana/messages`, {
      method: 'POST', headers: { ...json, authorization: `Bearer ${bo.token}` },
      body: JSON.stringify({ text: 'psst' }),
    });
    await page.waitForFunction(() => document.querySelectorAll('#dms li').length >= 1, null, { timeout: 10000 });
    // The tab is hidden (pauseWhenHidden closes the stream); a message comes
    // meanwhile; the tab shows again and the stream resumes with it.
    const visibility = (hidden) => page.evaluate((hidden) => {
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => hidden });
      document.dispatchEvent(new Event('visibilitychange'));
    }, hidden);
    await visibility(true);
    await fetch(`${base}/users/ana/messages`, {
      method: 'POST', headers: { ...json, authorization: `Bearer ${bo.token}` },
      body: JSON.stringify({ text: 'while hidden' }),
    });
    await visibility(false);
    await page.waitForFunction(() => document.querySelectorAll('#dms li').length >= 2, null, { timeout: 10000 });
    await page.fill('#dm-to', 'bo');
    await page.fill('#dm-text', 'hi bo');
    await page.click('#dm button');
    await page.waitForFunction(() => document.querySelectorAll('#dms li').length >= 3, null, { timeout: 10000 });
    const expired = await fetch(`${base}/admin/expire-sessions`, {
      method: 'POST', headers: { authorization: `Bearer ${adminToken}` },
    });
    await page.waitForFunction(() => document.getElementById('dm-status').textContent.startsWith('session expired'),
      null, { timeout: 15000 });
    return {
      sent: sent.status,
      expired: expired.status,
      dms: await page.$$eval('#dms li', (items) => items.map((item) => item.textContent)),
      status: await page.textContent('#dm-status'),
    };
  },

  // The llm example's page: typed tokens of a POST over the generated fetch
  // transport, then Cancel.
  async 'llm-cancel'(page) {
    await page.goto(`${base}/`);
    await page.click('#send');
    await page.waitForFunction(() => document.getElementById('reply').textContent.split(' ').length >= 4,
      null, { timeout: 10000 });
    await page.click('#cancel');
    await page.waitForFunction(() => document.getElementById('status').textContent === 'cancelled',
      null, { timeout: 5000 });
    return { reply: await page.textContent('#reply') };
  },
};

let exitCode = 0;
try {
  const page = await browser.newPage();
  const result = await modes[mode](page);
  process.stdout.write(JSON.stringify(result));
} catch (error) {
  console.error(`browser driver (${mode}) failed: ${error.stack || error}`);
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);
