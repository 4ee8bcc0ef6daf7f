// The chat page. Its events are typed by chat-events.ts, generated from the
// Rust types: `on("said", ...)` gets a Said, and a wrong event name or
// field is a compile error here. Compiled to js/chat.js by tsc (tsconfig.json).
import { TypedEventSource, type ChatEvents } from "./chat-events.js";

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const seen = new Set<string>(); // event ids shown, to prove each arrives once
let source: TypedEventSource<ChatEvents> | null = null;
let opens = 0;

function show(text: string, user: string | null, notice: boolean): void {
  const item = document.createElement("li");
  if (notice) item.className = "notice";
  if (user) {
    const name = document.createElement("span");
    name.className = "user";
    name.textContent = user;
    item.appendChild(name);
  }
  item.appendChild(document.createTextNode(text));
  const messages = $<HTMLOListElement>("messages");
  messages.appendChild(item);
  messages.scrollTop = messages.scrollHeight;
}

/** Shows an event once, by its id (the server replays exactly what was missed). */
function once(event: MessageEvent<string>, shown: () => void): void {
  if (seen.has(event.lastEventId)) {
    show(`duplicate ${event.lastEventId}!`, null, true);
    return;
  }
  seen.add(event.lastEventId);
  shown();
}

function join(room: string): void {
  source?.close();
  $("messages").textContent = "";
  seen.clear();
  opens = 0;
  // The browser reconnects by itself after a drop, sending Last-Event-ID;
  // the server replays exactly what this page missed.
  const events = new TypedEventSource<ChatEvents>(`/rooms/${encodeURIComponent(room)}/events`);
  events
    .on("said", (message, event) => once(event, () => show(message.text, message.user, false)))
    .on("announcement", (announcement, event) =>
      once(event, () => show(`announcement: ${announcement.text}`, null, true)),
    )
    .onReset(() => show("some history expired while you were away", null, true));
  events.source.onopen = () => {
    opens += 1;
    $("status").textContent = "live";
    $("status").className = "status open";
    $("reconnects").textContent = opens > 1 ? `(resumed ${opens - 1}×)` : "";
  };
  events.source.onerror = () => {
    $("status").textContent =
      events.source.readyState === EventSource.CLOSED ? "closed" : "reconnecting…";
    $("status").className = "status error";
  };
  source = events;
}

$<HTMLFormElement>("say").onsubmit = async (e: SubmitEvent) => {
  e.preventDefault();
  const input = $<HTMLInputElement>("text");
  const text = input.value;
  if (!text) return;
  input.value = "";
  const room = $<HTMLSelectElement>("room").value;
  const res = await fetch(`/rooms/${encodeURIComponent(room)}/messages`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user: $<HTMLInputElement>("user").value, text }),
  });
  if (!res.ok) show(`not sent: ${await res.text()}`, null, true);
};

fetch("/rooms")
  .then((r) => r.json() as Promise<string[]>)
  .then((rooms) => {
    const select = $<HTMLSelectElement>("room");
    for (const room of rooms) select.add(new Option(room, room));
    select.onchange = () => join(select.value);
    join(select.value);
  });

// Direct messages: a private stream, read with the login token in an
// `Authorization` header over the fetch transport (EventSource cannot send
// one, and a token in the URL ends up in access logs).
let token: string | null = null;
let inbox: TypedEventSource<ChatEvents> | null = null;
const seenDirect = new Set<string>();

function dmStatus(text: string, className: string): void {
  $("dm-status").textContent = text;
  $("dm-status").className = `status ${className}`;
}

function showDirect(from: string, to: string, text: string): void {
  const item = document.createElement("li");
  const who = document.createElement("span");
  who.className = "user";
  who.textContent = from === $<HTMLInputElement>("user").value ? `to ${to}` : from;
  item.appendChild(who);
  item.appendChild(document.createTextNode(text));
  $<HTMLOListElement>("dms").appendChild(item);
}

$<HTMLButtonElement>("login").onclick = async () => {
  inbox?.close();
  const res = await fetch("/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user: $<HTMLInputElement>("user").value }),
  });
  if (!res.ok) {
    dmStatus(`not logged in: ${await res.text()}`, "error");
    return;
  }
  token = ((await res.json()) as { token: string }).token;
  dmStatus("connecting…", "");
  const events = new TypedEventSource<ChatEvents>("/me/events", {
    transport: "fetch",
    headers: { authorization: `Bearer ${token}` },
    pauseWhenHidden: true,
  });
  events
    .on("direct", (direct, event) => {
      if (seenDirect.has(event.lastEventId)) return;
      seenDirect.add(event.lastEventId);
      showDirect(direct.from, direct.to, direct.text);
    })
    .onReset(() => dmStatus("some direct messages expired while you were away", "error"))
    .onError(({ status, willRetry }) => {
      if (status === 401) {
        token = null;
        dmStatus("session expired: log in again", "error");
      } else {
        dmStatus(willRetry ? "reconnecting…" : "closed", "error");
      }
    });
  events.source.onopen = () => dmStatus("live", "open");
  inbox = events;
};

$<HTMLFormElement>("dm").onsubmit = async (e: SubmitEvent) => {
  e.preventDefault();
  const to = $<HTMLInputElement>("dm-to").value;
  const input = $<HTMLInputElement>("dm-text");
  const text = input.value;
  if (!token || !to || !text) return;
  input.value = "";
  const res = await fetch(`/users/${encodeURIComponent(to)}/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ text }),
  });
  if (!res.ok) dmStatus(`not sent: ${res.status}`, "error");
};
