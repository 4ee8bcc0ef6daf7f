// The token page. Its events are typed by completion-events.ts, generated
// from the Rust enum `Completion`: `on("token", ...)` gets a string, and a
// wrong event name is a compile error here. `EventSource` cannot POST, so
// the stream goes over the module's fetch transport. Compiled to js/llm.js
// by tsc (tsconfig.json).
import { TypedEventSource } from "./completion-events.js";
const $ = (id) => document.getElementById(id);
let stream = null;
/** Ends the stream (aborting its fetch, which stops the server generating) and says why. */
function finish(status) {
    stream?.close();
    stream = null;
    $("status").textContent = status;
    $("send").disabled = false;
    $("cancel").disabled = true;
}
$("send").addEventListener("click", () => {
    $("reply").textContent = "";
    $("send").disabled = true;
    $("cancel").disabled = false;
    $("status").textContent = "streaming…";
    stream = new TypedEventSource("/completions", {
        transport: "fetch",
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: $("prompt").value }),
    })
        .on("token", (token) => {
        $("reply").textContent += token;
    })
        .on("done", () => finish("done"))
        // A reply is generated once: a lost connection is not retried (that
        // would POST the prompt again), and a refusal says its status.
        .onError(({ status, reason }) => finish(status ? `failed: ${status}` : `failed: ${reason}`));
});
$("cancel").addEventListener("click", () => finish("cancelled"));
