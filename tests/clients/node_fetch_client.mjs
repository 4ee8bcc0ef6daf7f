// Plays every conformance case with the generated module's FetchEventSource
// in Node (20+, which has fetch): the same compiled module the chat page
// loads, fetched from the server and imported as it is.
//
//   node node_fetch_client.mjs http://127.0.0.1:PORT
//
// Prints {case name: [events]} as JSON; tests/clients.rs compares it with
// the table. The source reconnects by itself (with Last-Event-ID, after the
// 50 ms `retry:` the server sends first) and stops at the server's 204.

const base = process.argv[2];
const source = await (await fetch(`${base}/conformance/transport.js`)).text();
const { FetchEventSource } = await import(`data:text/javascript,${encodeURIComponent(source)}`);
const cases = await (await fetch(`${base}/conformance/cases.json`)).json();

function play(c) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const stream = new FetchEventSource(`${base}/conformance/${c.name}?run=node-fetch&fast_retry=1`);
    const record = (event) => {
      seen.push({ type: event.type, data: event.data, lastEventId: event.lastEventId });
    };
    for (const type of new Set(['message', ...c.expect.map((e) => e.type)])) {
      stream.addEventListener(type, record);
    }
    stream.addEventListener('error', (event) => {
      if (event.willRetry) return;
      if (event.status === 204) resolve(seen);
      else reject(new Error(`${c.name}: ${event.reason}`));
    });
    setTimeout(() => { stream.close(); reject(new Error(`${c.name}: no 204 within 20 s`)); }, 20000).unref();
  });
}

const results = {};
for (const c of cases) results[c.name] = await play(c);
console.log(JSON.stringify(results));
