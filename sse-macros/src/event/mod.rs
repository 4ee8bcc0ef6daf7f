//! `#[derive(SseEvent)]`: `model` lifts the type and its `#[sse_event]`
//! attributes into event names and payload shapes (applying `rename_all`
//! with `case`), `validate` checks the names as a whole, and `expand`
//! generates the impls. Every error is collected with its span.

mod case;
mod expand;
mod model;
mod validate;

use proc_macro2::TokenStream;

use crate::errors::Errors;

pub fn derive(input: TokenStream) -> TokenStream {
    let input = match syn::parse2::<syn::DeriveInput>(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let mut errors = Errors::default();
    let model = model::EventModel::from_input(&input, &mut errors);
    if let Some(model) = &model {
        validate::names(model, &mut errors);
    }
    match model {
        Some(model) if errors.is_empty() => expand::impls(&model),
        _ => errors.into_compile_errors(),
    }
}
