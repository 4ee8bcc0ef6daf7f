// What the generated types forbid: each line below must be a TypeScript
// error (`@ts-expect-error` fails the build when the line compiles), so a
// renamed event or field on the Rust side breaks this check, and the page.
// Checked by `tsc --noEmit` in tests/typescript.rs; never shipped.
import { TypedEventSource, type ChatEvents } from "./chat-events.js";

const events = new TypedEventSource<ChatEvents>("/rooms/general/events");

// @ts-expect-error: there is no `sayd` event.
events.on("sayd", () => {});

events.on("said", (message) => {
  const text: string = message.text;
  // @ts-expect-error: a Said has no `body`.
  const body: string = message.body;
  // @ts-expect-error: `user` is a string.
  const user: number = message.user;
  return [text, body, user];
});

events.on("announcement", (announcement) => {
  // @ts-expect-error: an announcement has only `text`.
  return announcement.user;
});
