// The generated FetchEventSource's own rules, in Node, against a server
// that answers from a script (tests/support/scripted.rs):
//
//   node node_fetch_behaviour.mjs <scenario> http://127.0.0.1:PORT/stream
//
// Prints what the source saw as JSON; tests/clients.rs checks it, and what
// the server was asked.

const [scenario, url] = process.argv.slice(2);
const base = new URL(url).origin;
const source = await (await fetch(`${base}/transport.js`)).text();
const { FetchEventSource } = await import(`data:text/javascript,${encodeURIComponent(source)}`);

/** Runs a source until it closes for good; what it saw. */
function run(init, onEvent = () => {}) {
  return new Promise((resolve) => {
    const seen = { events: [], errors: [] };
    const stream = new FetchEventSource(url, init);
    stream.addEventListener('message', (event) => {
      seen.events.push({ data: event.data, lastEventId: event.lastEventId });
      onEvent(stream, event);
    });
    stream.addEventListener('error', (event) => {
      seen.errors.push({ status: event.status ?? null, reason: event.reason, willRetry: event.willRetry });
      if (!event.willRetry) resolve({ ...seen, readyState: stream.readyState });
    });
    stream.addEventListener('closed-by-test', () => resolve({ ...seen, readyState: stream.readyState }));
    setTimeout(() => { stream.close(); resolve({ ...seen, readyState: stream.readyState, timedOut: true }); }, 20000).unref();
  });
}

const scenarios = {
  // POST with a header and a body, cut mid-event, resumed twice, then 204.
  reconnect: () => run({
    method: 'POST',
    headers: { authorization: 'Bearer token' },
    body: '{"prompt":"hi"}',
  }),
  // 503 and 429 retried; a 401 on reconnect ends it.
  refusal: () => run({ retryMs: 10 }),
  // A 200 that is not an event stream ends it.
  'not-event-stream': () => run({}),
  // Aborting the signal closes it, for good.
  abort: () => {
    const controller = new AbortController();
    return run({ signal: controller.signal }, (stream) => {
      controller.abort();
      stream.dispatchEvent(new Event('closed-by-test'));
    });
  },
};

const result = await scenarios[scenario]();
// Give an aborted or closed source the chance to misbehave before reporting.
await new Promise((resolve) => setTimeout(resolve, 100));
console.log(JSON.stringify(result));
