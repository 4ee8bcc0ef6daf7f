//! The pipeline each attribute runs: parse → model → validate → expand. On any
//! error the user's item is emitted untouched beside the errors (as
//! tokio-macros does), with a stub `router()` of the real signature (as
//! thiserror emits a fallback impl), so the rest of the file still
//! type-checks, a `.router()` call adds no second error, and IDEs keep working.

mod attr;
mod expand;
mod model;
mod path;
mod validate;

use proc_macro2::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{Item, ItemImpl};

use crate::errors::{Errors, error_with_help};
use attr::ControllerArgs;
use model::Controller;

pub fn sse_controller(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let mut item: ItemImpl = match syn::parse2::<Item>(input.clone()) {
        Ok(Item::Impl(item)) if item.trait_.is_none() => item,
        Ok(Item::Impl(item)) => {
            let (_, trait_path, _) = item.trait_.as_ref().expect("checked above");
            let error = error_with_help(
                trait_path.span(),
                "#[sse_controller] goes on an inherent impl block, not a trait impl",
                "write `impl MyController { ... }` and put the #[sse] methods there",
            );
            let mut item = item;
            model::mark_route_attributes(&mut item);
            return with_errors(quote!(#item), error);
        }
        Ok(other) => {
            let error = error_with_help(
                item_name_span(&other),
                "#[sse_controller] goes on an `impl` block",
                "write `#[sse_controller(\"/events\")] impl MyController { ... }` with #[sse] methods inside",
            );
            return with_errors(input, error);
        }
        Err(error) => return with_errors(input, error),
    };

    let args = syn::parse::Parser::parse2(
        |stream: syn::parse::ParseStream| ControllerArgs::parse(stream, &mut errors),
        args,
    );
    let Some(args) = errors.ok(args) else {
        model::mark_route_attributes(&mut item);
        let stub = expand::stub_router(&item, None);
        return fallback(&item, errors, stub);
    };
    let controller = Controller::from_input(args, item, &mut errors);
    validate::check(&controller, &mut errors);
    if errors.is_empty() {
        expand::controller(&controller)
    } else {
        // With a `router` of the user's own, a stub would be one more error.
        let stub = match controller.existing_router {
            Some(_) => TokenStream::new(),
            None => expand::stub_router(&controller.item, controller.state.as_ref()),
        };
        fallback(&controller.item, errors, stub)
    }
}

pub fn sse(args: TokenStream, input: TokenStream) -> TokenStream {
    route_attribute("sse", args, input)
}

/// `#[sse]`, `#[get]`, `#[post]`, ...: read by the enclosing controller, which
/// marks them; alone, they are a mistake.
pub fn route_attribute(name: &str, args: TokenStream, input: TokenStream) -> TokenStream {
    if args.to_string() == model::CHECKED_MARKER {
        return input;
    }
    let error = error_with_help(
        proc_macro2::Span::call_site(),
        format!("#[{name}] only works on a method of an `impl` block marked #[sse_controller]"),
        format!(
            "put #[sse_controller(\"/prefix\")] on the enclosing `impl` block; it turns each \
             #[{name}] method into a route"
        ),
    );
    with_errors(input, error)
}

/// The user's item, untouched but for its marked attributes, a stub of what
/// the expansion would have added, and the errors.
fn fallback(item: &ItemImpl, errors: Errors, stub: TokenStream) -> TokenStream {
    let errors = errors.into_compile_errors();
    quote!(#item #stub #errors)
}

fn with_errors(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#item #error)
}

fn item_name_span(item: &Item) -> proc_macro2::Span {
    match item {
        Item::Struct(s) => s.ident.span(),
        Item::Enum(e) => e.ident.span(),
        Item::Fn(f) => f.sig.ident.span(),
        Item::Trait(t) => t.ident.span(),
        Item::Mod(m) => m.ident.span(),
        other => other.span(),
    }
}
