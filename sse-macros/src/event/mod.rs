//! `#[derive(SseEvent)]`: `model` lifts the type and its `#[sse_event]`
//! attributes into event names and payload shapes (applying `rename_all`
//! with `case`), `validate` checks the names as a whole, `expand`
//! generates the impls, and `decode` the client's side of them. Every error is collected with its span; on error,
//! stub impls stand beside them.

mod case;
mod decode;
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
        // Beside the errors, impls that compile (as thiserror's fallback
        // does), so code that sends or streams the type adds no errors of
        // its own to the ones that say what to fix.
        _ => {
            let stub = expand::stub_impls(&input);
            let errors = errors.into_compile_errors();
            quote::quote! { #errors #stub }
        }
    }
}
