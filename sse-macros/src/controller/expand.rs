//! Code generation. Reads the validated model only.
//!
//! For each controller this emits the user's `impl` block unchanged (its
//! `#[sse]` attributes marked as read) and a second `impl` block with one `router` method. Each
//! route becomes a closure handler taking the method's extractors. Everything is
//! named through `::sse_runtime::__private`.

use std::collections::BTreeMap;

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::controller::attr::{HttpMethod, SwitchableDuration};
use crate::controller::model::{Controller, Returns, Route};

pub fn controller(controller: &Controller) -> TokenStream {
    let item = &controller.item;
    let private = quote!(::sse_runtime::__private);

    // Routes sharing a path become one axum method router (GET and POST on one path).
    let mut by_path: BTreeMap<&str, Vec<&Route>> = BTreeMap::new();
    for route in &controller.routes {
        by_path
            .entry(route.path.axum.as_str())
            .or_default()
            .push(route);
    }
    let route_calls = by_path.iter().map(|(path, routes)| {
        let handlers = routes.iter().map(|route| {
            let filter = match route.method {
                HttpMethod::Get => quote!(GET),
                HttpMethod::Post => quote!(POST),
                HttpMethod::Put => quote!(PUT),
                HttpMethod::Patch => quote!(PATCH),
                HttpMethod::Delete => quote!(DELETE),
            };
            let handler = handler(route);
            quote!(.on(#private::axum::routing::MethodFilter::#filter, #handler))
        });
        quote! {
            .route(#path, #private::axum::routing::MethodRouter::new() #(#handlers)*)
        }
    });

    let route_list: String = controller
        .routes
        .iter()
        .map(|route| {
            format!(
                "\n- `{} {}` → [`Self::{}`]",
                route.method.name(),
                route.path.axum,
                route.ident
            )
        })
        .collect();
    let doc = format!(
        "An axum router serving this controller's server-sent event routes:\n{route_list}\n\n\
         Merge it into an app with `Router::merge`."
    );
    let router = router_impl(
        item,
        controller.state.as_ref(),
        quote! {
            #[doc = #doc]
            #[allow(clippy::redundant_clone)]
        },
        quote! {
            let __controller = ::std::sync::Arc::new(self);
            let _ = &__controller; // a controller with only receiver-less routes
            #private::axum::Router::new() #(#route_calls)*
        },
    );

    quote! {
        #item

        #router
    }
}

/// What the controller macro emits beside its errors: a `router` with the
/// real one's signature, so that the user's `.router()` call adds no second,
/// misleading error (thiserror's fallback impl does the same).
pub fn stub_router(item: &syn::ItemImpl, state: Option<&syn::Type>) -> TokenStream {
    router_impl(
        item,
        state,
        quote!(#[doc(hidden)]),
        quote!(::core::unreachable!(
            "#[sse_controller] reported a compile error"
        )),
    )
}

/// `impl<..> SelfTy { ATTRS pub fn router<__S>(self) -> Router<__S> where .. { BODY } }`:
/// the router's signature, one place for the real router and the stub.
fn router_impl(
    item: &syn::ItemImpl,
    state: Option<&syn::Type>,
    attrs: TokenStream,
    body: TokenStream,
) -> TokenStream {
    let private = quote!(::sse_runtime::__private);
    let (impl_generics, self_ty, where_clause) = (
        &item.generics.params,
        &item.self_ty,
        &item.generics.where_clause,
    );
    let (state_param, state_ty) = match state {
        Some(state) => (quote!(), quote!(#state)),
        None => (quote!(<__S>), quote!(__S)),
    };
    let state_bound = state.is_none().then(|| {
        quote!(__S: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static,)
    });
    let where_predicates = where_clause.as_ref().map(|w| {
        let predicates = w.predicates.iter();
        quote!(#(#predicates,)*)
    });
    quote! {
        impl<#impl_generics> #self_ty {
            #attrs
            pub fn router #state_param (self) -> #private::axum::Router<#state_ty>
            where
                #where_predicates
                #state_bound
                Self: ::core::marker::Send + ::core::marker::Sync + 'static,
            {
                #body
            }
        }
    }
}

/// The handler closure for one route.
fn handler(route: &Route) -> TokenStream {
    let private = quote!(::sse_runtime::__private);
    let method = &route.ident;
    let arg_names: Vec<_> = (0..route.args.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect();
    let arg_types = route.args.iter().map(|arg| &arg.ty);
    // Spanned at the return type: a return type that borrows the controller
    // where it may not is then shown there ("argument requires that borrow
    // lasts for `'static`"), though the error's main span stays on the
    // attribute (`owned_return_type_borrows_self` records it).
    let receiver = route
        .takes_self
        .then(|| quote_spanned!(route.returns.ty().span()=> &*__this,));
    let await_call = route.is_async.then(|| quote!(.await));
    let options = options(route);

    // rustc reports an unmet bound of a call at its argument expression, so the
    // method call carries the return type's span: a return value that is not a
    // stream of events is then reported on the user's return type.
    let return_span = route.returns.ty().span();
    // The method's name too: an unmet bound is then reported on one spot,
    // the return type, however many checks meet it.
    let method_at_return = proc_macro2::Ident::new(&method.to_string(), return_span);
    let call = quote_spanned!(return_span=> Self::#method_at_return(#receiver #(#arg_names),*) #await_call);
    // A receiver-less method, or one whose return type cannot borrow `&self`
    // (`-> Subscription`), is called directly; its response owns its stream.
    let plain = matches!(route.returns, Returns::Response(_));
    let direct = !route.takes_self || route.returns.is_owned();
    // A plain handler's response is built inside the handler's future, which
    // owns the controller handle it borrows: no check is needed.
    let call = if route.takes_self && direct && !plain {
        // Every token of the wrapper carries the return type's span (the
        // path too, not the call-site `#private`), so that a return type
        // that is not a stream is reported on it, not on the attribute.
        quote_spanned!(return_span=>
            ::sse_runtime::__private::a_named_return_type_must_not_borrow_self(#call))
    } else {
        call
    };
    let body = match (&route.returns, direct) {
        (Returns::Response(_), _) => quote!(#private::respond_plain(#call)),
        (Returns::Stream(_), true) => {
            quote!(#private::respond_stream(#call, #options).await)
        }
        (Returns::Result(_), true) => {
            quote!(#private::respond_result(#call, #options).await)
        }
        // With `&self`, the method's stream may borrow the controller (in edition
        // 2024, `impl Stream` captures `&self`'s lifetime). The generator owns the
        // `Arc` it borrows from, so the response can outlive this call.
        (Returns::Stream(_), false) => {
            // The generator carries the return type's span too: when its items
            // are not events, the bound it meets again lands on the same spot
            // as `check_stream`'s, and the compiler reports the error once.
            let generator = quote_spanned! {return_span=>
                ::sse_runtime::__private::async_stream::stream! {
                    let __stream = ::sse_runtime::__private::check_stream(#call);
                    let mut __stream = ::core::pin::pin!(__stream);
                    while let ::core::option::Option::Some(__item) =
                        ::sse_runtime::__private::__StreamExt::next(&mut __stream).await
                    {
                        yield __item;
                    }
                }
            };
            quote!(#private::respond_stream(#generator, #options).await)
        }
        (Returns::Result(_), false) => {
            quote! {
                #private::respond_steps(#private::async_stream::stream! {
                    match #private::check_result(#call) {
                        ::core::result::Result::Err(__error) => yield #private::Step::reject(__error),
                        ::core::result::Result::Ok(__stream) => {
                            yield #private::Step::Start;
                            let mut __stream = ::core::pin::pin!(__stream);
                            while let ::core::option::Option::Some(__item) =
                                #private::__StreamExt::next(&mut __stream).await
                            {
                                yield #private::Step::Item(__item);
                            }
                        }
                    }
                }, #options).await
            }
        }
    };
    let this = route
        .takes_self
        .then(|| quote!(let __this = ::std::sync::Arc::clone(&__controller);));
    // First, before any extractor that takes the body.
    let accept = route
        .compress
        .then(|| quote!(__accept: ::sse_runtime::__private::CompressArg,));
    let require = route
        .compress
        .then(|| quote!(::sse_runtime::__require_compression!();));
    quote! {{
        #require
        #this
        move |#accept #(#arg_names: #arg_types),*| async move { #body }
    }}
}

fn options(route: &Route) -> TokenStream {
    let setting = |setting: SwitchableDuration| match setting {
        SwitchableDuration::Default => quote!(::sse_runtime::__private::Setting::Default),
        SwitchableDuration::Off => quote!(::sse_runtime::__private::Setting::Off),
        SwitchableDuration::EveryMs(ms) => quote!(::sse_runtime::__private::Setting::Millis(#ms)),
    };
    let keep_alive = setting(route.keep_alive);
    let batch_window = setting(route.batch_window);
    let write_stall = setting(route.write_stall);
    let retry_ms = match route.retry_ms {
        Some(ms) => quote!(::core::option::Option::Some(#ms)),
        None => quote!(::core::option::Option::None),
    };
    let route_name = &route.path.axum;
    let compress = if route.compress {
        quote!(::core::option::Option::Some(__accept))
    } else {
        quote!(::core::option::Option::None)
    };
    quote! {
        ::sse_runtime::__private::RouteOptions {
            route: #route_name,
            compress: #compress,
            keep_alive: #keep_alive,
            retry_ms: #retry_ms,
            batch_window: #batch_window,
            write_stall: #write_stall,
        }
    }
}
