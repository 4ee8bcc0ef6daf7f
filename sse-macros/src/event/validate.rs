//! Checks of the event names as a whole: each must be a valid SSE event
//! type (not empty, no line break, which would end the `event:` field and
//! start another), and no two variants may share one.

use std::collections::HashMap;

use super::model::{EventModel, Kind, Name};
use crate::errors::{Errors, error_with_help};

pub fn names(model: &EventModel, errors: &mut Errors) {
    let names: Vec<&Name> = match &model.kind {
        Kind::Enum(variants) => variants.iter().map(|variant| &variant.name).collect(),
        Kind::Struct(name) => vec![name],
    };
    let mut first_use: HashMap<&str, &Name> = HashMap::new();
    for name in names {
        if name.value.is_empty() {
            errors.push(error_with_help(
                name.span,
                "an SSE event name cannot be empty",
                "an empty `event:` field means `message`; name the event, or send a plain \
                 MessageEvent",
            ));
        } else if name.value.contains(['\r', '\n']) {
            errors.push(error_with_help(
                name.span,
                format!("the event name {:?} contains a line break", name.value),
                "a line break would end the `event:` field and start another field \
                 (event injection); use a name without CR or LF",
            ));
        }
        if let Some(first) = first_use.get(name.value.as_str()) {
            let mut error = error_with_help(
                name.span,
                format!("two variants are both the event {:?}", name.value),
                "a browser could not tell them apart; rename one with \
                 #[sse_event(rename = \"...\")]",
            );
            error.combine(syn::Error::new(first.span, "first named here"));
            errors.push(error);
        } else {
            first_use.insert(&name.value, name);
        }
    }
}
