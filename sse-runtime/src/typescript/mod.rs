//! The browser side of typed events, generated from the Rust types (feature
//! `typescript`): the payload types, a map from event name to payload, and
//! a typed event source (over `EventSource`, or over `fetch` for headers and
//! `POST`), written as one TypeScript module by
//! [`module`] for a type marked `#[sse_event(typescript)]`. Payload types
//! are described by [`ts-rs`](ts_rs): derive [`TS`] on them as you derive
//! `Serialize` (ts-rs reads the `#[serde]` attributes, so both sides agree
//! on field names).
//!
//! ```
//! use serde::Serialize;
//! use sse_runtime::SseEvent;
//! use sse_runtime::typescript::{self, TS};
//!
//! #[derive(Serialize, TS)]
//! #[ts(crate = "sse_runtime::typescript::ts_rs")]
//! struct Said { user: String, text: String }
//!
//! #[derive(SseEvent)]
//! #[sse_event(rename_all = "snake_case", typescript)]
//! enum ChatEvent { Said(Said), UserJoined { user: String } }
//!
//! let module = typescript::module::<ChatEvent>("ChatEvents");
//! assert!(module.contains("export type Said = { user: string, text: string, };"));
//! assert!(module.contains("\"said\": Said,"));
//! assert!(module.contains("\"user_joined\": { user: string, },"));
//! assert!(module.contains("export class TypedEventSource"));
//! ```
//!
//! In the browser:
//!
//! ```text
//! import { TypedEventSource, type ChatEvents } from './chat-events.js';
//! new TypedEventSource<ChatEvents>('/rooms/general/events')
//!   .on('said', (said) => show(said.user, said.text))   // `said` is a Said
//!   .on('sayd', ...)                                     // a TypeScript error
//!
//! // A private stream: the token goes in a header, not in the URL.
//! new TypedEventSource<ChatEvents>('/me/events', {
//!   transport: 'fetch',
//!   headers: { authorization: `Bearer ${token}` },
//! }).on('said', show).onError(({ status }) => { if (status === 401) logIn(); });
//! ```
//!
//! Write the module with a small binary or test of the app, commit it, and
//! check it in a test (`assert_eq!` against the committed file), so a
//! renamed field fails the build instead of the page.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

pub use ts_rs::{self, TS};

use crate::SseEvent;

/// What `#[derive(SseEvent)]` implements for a type marked
/// `#[sse_event(typescript)]`: how to describe each event to [`module`].
pub trait TypeScriptEvents: SseEvent {
    /// Adds every event of this type, with its data type, to `events`.
    fn describe(events: &mut EventMap);
}

/// What an event's data type must be for [`module`]. Exists to give a
/// precise message on the payload's type when it has no TypeScript
/// description.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no TypeScript description, which #[sse_event(typescript)] needs",
    label = "not `TS`",
    note = "derive it beside `Serialize`: #[derive(Serialize, sse_runtime::typescript::TS)] \
            #[ts(crate = \"sse_runtime::typescript::ts_rs\")]"
)]
pub trait Described: TS + 'static {}
impl<T: TS + 'static + ?Sized> Described for T {}

/// Events and the TypeScript declarations their data types need, as
/// [`TypeScriptEvents::describe`] adds them.
#[derive(Default)]
pub struct EventMap {
    events: Vec<(String, String)>,
    declarations: BTreeMap<String, String>,
    seen: BTreeSet<String>,
}

impl EventMap {
    /// An event whose data is the named type `T` (declared in the module
    /// when it has a declaration of its own).
    pub fn named<T: Described + ?Sized>(&mut self, event: &str) {
        self.events.push((event.to_owned(), T::name()));
        self.declare::<T>();
    }

    /// An event whose data type is written out in place.
    pub fn inline<T: Described + ?Sized>(&mut self, event: &str) {
        self.events.push((event.to_owned(), T::inline()));
        T::visit_dependencies(&mut Declare(self));
    }

    /// An event whose data is `null`.
    pub fn null(&mut self, event: &str) {
        self.events.push((event.to_owned(), "null".to_owned()));
    }

    /// `T`'s declaration, if it has one, and those of what it uses.
    fn declare<T: TS + 'static + ?Sized>(&mut self) {
        if T::output_path().is_none() {
            // A built-in type (`string`, `number`, an array...): nothing to declare.
            T::visit_dependencies(&mut Declare(self));
            return;
        }
        let name = T::ident();
        if !self.seen.insert(name.clone()) {
            return;
        }
        self.declarations
            .insert(name, format!("export {}", T::decl()));
        T::visit_dependencies(&mut Declare(self));
    }
}

struct Declare<'a>(&'a mut EventMap);

impl ts_rs::TypeVisitor for Declare<'_> {
    fn visit<T: TS + 'static + ?Sized>(&mut self) {
        self.0.declare::<T>();
    }
}

/// The TypeScript module for `E`'s events: the declarations of the data
/// types, `export type <map_name> = { "<event>": <data type>, ... }`, and
/// [`TYPED_EVENT_SOURCE`]. The same input gives the same text, so a test
/// can compare it with a committed file.
pub fn module<E: TypeScriptEvents>(map_name: &str) -> String {
    let mut events = EventMap::default();
    E::describe(&mut events);
    let mut out = format!(
        "// Generated by sse-runtime from the Rust type `{}`: do not edit.\n\
         // Every event name and payload here comes from the Rust side, so a\n\
         // renamed event or field is a TypeScript error in the page.\n\n",
        std::any::type_name::<E>()
    );
    for declaration in events.declarations.values() {
        out.push_str(declaration);
        out.push_str("\n\n");
    }
    out.push_str(&format!(
        "/** Every event of `{}`: its name, and the type of its data. */\n\
         export type {map_name} = {{\n",
        std::any::type_name::<E>()
            .rsplit("::")
            .next()
            .unwrap_or_default()
    ));
    for (event, data) in &events.events {
        out.push_str(&format!("  {event:?}: {data},\n"));
    }
    out.push_str("};\n\n");
    out.push_str(TYPED_EVENT_SOURCE);
    out
}

/// The client part of every [`module`]: `FetchEventSource` (an
/// `EventSource` over `fetch`, with headers, a method and a body, for
/// browsers and Node 20+) and `TypedEventSource` over either one, whose
/// `on(name, handler)` accepts only the map's event names and hands the
/// handler the parsed data of that event's type. No dependency.
pub const TYPED_EVENT_SOURCE: &str = concat!(
    include_str!("fetch_event_source.ts"),
    include_str!("typed_event_source.ts")
);
