//! The controller as a typed model, lifted from the `impl` block once. `validate`
//! checks it and `expand` only reads it.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, ReturnType, Type};

use crate::controller::attr::{
    ControllerArgs, HttpMethod, PlainRouteArgs, RouteArgs, SwitchableDuration,
};
use crate::controller::path::{self, RoutePath};
use crate::errors::{Errors, error_with_help, spanned_error_with_help};

pub struct Controller {
    /// The user's `impl` block with its `#[sse]` attributes marked as read.
    pub item: ItemImpl,
    pub state: Option<Type>,
    pub routes: Vec<Route>,
    /// The span of an existing `router` method, which the generated one would clash with.
    pub existing_router: Option<Span>,
}

pub struct Route {
    pub ident: Ident,
    pub path_literal: LitStr,
    /// Prefix and route path joined.
    pub path: RoutePath,
    pub method: HttpMethod,
    pub keep_alive: SwitchableDuration,
    pub batch_window: SwitchableDuration,
    pub write_stall: SwitchableDuration,
    pub retry_ms: Option<u64>,
    /// `compress = true`: the handler also extracts `Accept-Encoding`.
    pub compress: bool,
    pub takes_self: bool,
    pub is_async: bool,
    pub args: Vec<Arg>,
    pub returns: Returns,
}

pub struct Arg {
    pub ty: Type,
    pub kind: ArgKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    Path,
    State,
    Other,
}

pub enum Returns {
    /// `impl Stream<Item = ...>` or any stream type.
    Stream(Type),
    /// `Result<impl Stream<...>, E>`: `Err` is answered before streaming starts.
    Result(Type),
    /// A plain route's response: anything `IntoResponse`.
    Response(Type),
}

impl Returns {
    pub fn ty(&self) -> &Type {
        match self {
            Returns::Stream(ty) | Returns::Result(ty) | Returns::Response(ty) => ty,
        }
    }

    /// Whether the type, as written, can borrow nothing from `&self`: no
    /// `impl Trait` (which captures `&self` in edition 2024), no reference and
    /// no lifetime. `Subscription` or `BoxStream<'static, T>` with `'static`
    /// spelled out do not qualify for the latter; a named type with a hidden
    /// lifetime parameter slips through and is then a borrow error at the
    /// return type.
    pub fn is_owned(&self) -> bool {
        fn owned(tokens: proc_macro2::TokenStream) -> bool {
            tokens.into_iter().all(|token| match token {
                proc_macro2::TokenTree::Ident(ident) => ident != "impl",
                proc_macro2::TokenTree::Punct(punct) => !matches!(punct.as_char(), '&' | '\''),
                proc_macro2::TokenTree::Group(group) => owned(group.stream()),
                proc_macro2::TokenTree::Literal(_) => true,
            })
        }
        owned(quote::ToTokens::to_token_stream(self.ty()))
    }
}

/// The argument `#[sse]` is given once its controller has read it. The user's
/// attribute path is kept (so their `use sse_runtime::sse` counts as used), and
/// `#[sse]` passes the item through untouched when it sees this marker.
pub const CHECKED_MARKER: &str = "__sse_controller_checked";

/// Marks every `#[sse]` attribute of `item` as read, so that the block can be
/// emitted (beside errors, or as the expansion) without the attributes acting again.
pub fn mark_route_attributes(item: &mut ItemImpl) {
    for impl_item in &mut item.items {
        if let Some(attrs) = attrs_mut(impl_item) {
            mark_route_attributes_of(attrs);
        }
    }
}

/// Marks the `#[sse]` attributes among `attrs` as read.
fn mark_route_attributes_of(attrs: &mut [Attribute]) {
    attrs
        .iter_mut()
        .filter(|a| is_route_attribute(a))
        .for_each(mark_checked);
}

fn mark_checked(attr: &mut Attribute) {
    let path = attr.path().clone();
    let marker = Ident::new(CHECKED_MARKER, Span::call_site());
    attr.meta = syn::parse_quote!(#path(#marker));
}

fn attrs_mut(item: &mut ImplItem) -> Option<&mut Vec<Attribute>> {
    match item {
        ImplItem::Fn(f) => Some(&mut f.attrs),
        ImplItem::Const(c) => Some(&mut c.attrs),
        ImplItem::Type(t) => Some(&mut t.attrs),
        ImplItem::Macro(m) => Some(&mut m.attrs),
        _ => None,
    }
}

/// What a route attribute declares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AttributeKind {
    /// `#[sse(...)]`: an event stream.
    Sse,
    /// `#[get(...)]`, `#[post(...)]`, ...: a plain handler.
    Plain(HttpMethod),
}

/// The kind of a route attribute (`#[sse]`, `#[get]`, `#[post]`, `#[put]`,
/// `#[patch]`, `#[delete]`, by their last path segment), or `None`.
fn route_attribute_kind(attr: &Attribute) -> Option<AttributeKind> {
    let name = attr.path().segments.last()?.ident.to_string();
    match name.as_str() {
        "sse" => Some(AttributeKind::Sse),
        other => HttpMethod::of_attribute(other).map(AttributeKind::Plain),
    }
}

fn is_route_attribute(attr: &Attribute) -> bool {
    route_attribute_kind(attr).is_some()
}

impl Controller {
    /// Builds the model from the macro's input (an inherent `impl` block,
    /// checked by the caller). Every mistake is recorded in `errors`, and the
    /// model is built as far as possible, so one compile reports them all.
    pub fn from_input(args: ControllerArgs, mut item: ItemImpl, errors: &mut Errors) -> Controller {
        let prefix = match path::parse(&args.prefix.value()) {
            Ok(prefix) => prefix,
            Err(why) => {
                errors.push(syn::Error::new(args.prefix.span(), why));
                RoutePath {
                    axum: "/".into(),
                    params: Vec::new(),
                }
            }
        };

        let mut routes = Vec::new();
        let mut existing_router = None;
        for impl_item in &mut item.items {
            if let ImplItem::Fn(method) = impl_item {
                if method.sig.ident == "router" {
                    existing_router = Some(method.sig.ident.span());
                }
                let route_attrs: Vec<Attribute> = method
                    .attrs
                    .iter()
                    .filter(|a| is_route_attribute(a))
                    .cloned()
                    .collect();
                mark_route_attributes_of(&mut method.attrs);
                if let Some((first, repeated)) = route_attrs.split_first() {
                    for attr in repeated {
                        errors.push(spanned_error_with_help(
                            attr,
                            "a method can carry only one route attribute",
                            "to serve the same handler on two paths or methods, add a second method \
                             that calls this one",
                        ));
                    }
                    if let Some(route) = Route::from_method(first, method, &prefix, errors) {
                        routes.push(route);
                    }
                }
            } else if let Some(attrs) = attrs_mut(impl_item) {
                for attr in attrs.iter().filter(|a| is_route_attribute(a)) {
                    let name = attr.path().segments.last().map(|s| s.ident.to_string());
                    let name = name.as_deref().unwrap_or("sse");
                    let what = if name == "sse" {
                        "returns a stream"
                    } else {
                        "answers the request"
                    };
                    errors.push(spanned_error_with_help(
                        attr,
                        format!("#[{name}] goes on a method"),
                        format!("put it on a `fn` of this impl block that {what}"),
                    ));
                }
                mark_route_attributes_of(attrs);
            }
        }

        Controller {
            item,
            state: args.state,
            routes,
            existing_router,
        }
    }
}

impl Route {
    fn from_method(
        attr: &Attribute,
        method: &ImplItemFn,
        prefix: &RoutePath,
        errors: &mut Errors,
    ) -> Option<Route> {
        let kind = route_attribute_kind(attr)?;
        let parsed = match (&attr.meta, kind) {
            // `#[sse]` with no parentheses at all.
            (syn::Meta::Path(_), _) => Err(spanned_error_with_help(
                attr,
                "missing route path",
                "write the path first, as a string literal: #[sse(\"/stream\")]",
            )),
            (_, AttributeKind::Sse) => attr
                .parse_args_with(|input: syn::parse::ParseStream| RouteArgs::parse(input, errors)),
            (_, AttributeKind::Plain(method)) => attr
                .parse_args_with(PlainRouteArgs::parse)
                .map(|plain| RouteArgs::plain(plain.path, method)),
        };
        let args = errors.ok(parsed);

        let sig = &method.sig;
        let takes_self = has_receiver(sig, errors);
        if !sig.generics.params.is_empty() {
            errors.push(error_with_help(
                sig.generics.span(),
                "a route method cannot be generic",
                "axum needs one concrete handler per route; use concrete extractor types",
            ));
        }
        let returns = match (&sig.output, kind) {
            (ReturnType::Default, AttributeKind::Plain(_)) => {
                Some(Returns::Response(syn::parse_quote!(())))
            }
            (ReturnType::Type(_, ty), AttributeKind::Plain(_)) => {
                Some(Returns::Response((**ty).clone()))
            }
            (ReturnType::Default, AttributeKind::Sse) => {
                errors.push(error_with_help(
                    sig.ident.span(),
                    "an #[sse] method must return a stream of events",
                    "add a return type such as `-> impl Stream<Item = MessageEvent>`",
                ));
                None
            }
            (ReturnType::Type(_, ty), AttributeKind::Sse) if is_result(ty) => {
                Some(Returns::Result((**ty).clone()))
            }
            (ReturnType::Type(_, ty), AttributeKind::Sse) => Some(Returns::Stream((**ty).clone())),
        };
        let method_args = sig
            .inputs
            .iter()
            .filter_map(|input| match input {
                FnArg::Typed(arg) => Arg::from_type(&arg.ty, errors),
                FnArg::Receiver(_) => None,
            })
            .collect();

        let args = args?;
        let path = match path::parse(&args.path.value())
            .and_then(|route| RoutePath::join(prefix, &route))
        {
            Ok(path) => path,
            Err(why) => {
                errors.push(syn::Error::new(args.path.span(), why));
                return None;
            }
        };
        Some(Route {
            ident: sig.ident.clone(),
            path_literal: args.path,
            path,
            method: args.method,
            keep_alive: args.keep_alive,
            batch_window: args.batch_window,
            write_stall: args.write_stall,
            retry_ms: args.retry_ms,
            compress: args.compress,
            takes_self,
            is_async: sig.asyncness.is_some(),
            args: method_args,
            returns: returns?,
        })
    }
}

/// Whether the method has a receiver. Only `&self` (or none) is allowed;
/// any other receiver is reported, and still counts as one.
fn has_receiver(sig: &syn::Signature, errors: &mut Errors) -> bool {
    let Some(receiver) = sig.receiver() else {
        return false;
    };
    let help = "the controller is shared by every request behind an `Arc`";
    let (message, help) = if receiver.colon_token.is_some() {
        (
            "an #[sse] method takes `&self` or no receiver, not a typed `self`",
            format!("{help}; take `&self`"),
        )
    } else if receiver.reference.is_none() {
        (
            "an #[sse] method cannot take `self` by value",
            format!("{help}, so no request can own it; take `&self`"),
        )
    } else if receiver.mutability.is_some() {
        (
            "an #[sse] method cannot take `&mut self`",
            format!("{help}; take `&self` and keep mutable state behind a `Mutex` or a channel"),
        )
    } else {
        return true;
    };
    errors.push(spanned_error_with_help(receiver, message, help));
    true
}

fn is_result(ty: &Type) -> bool {
    last_segment_is(ty, "Result")
}

fn last_segment_is(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(path) => {
            path.qself.is_none() && path.path.segments.last().is_some_and(|s| s.ident == name)
        }
        Type::Paren(inner) => last_segment_is(&inner.elem, name),
        Type::Group(inner) => last_segment_is(&inner.elem, name),
        _ => false,
    }
}

impl Arg {
    fn from_type(ty: &Type, errors: &mut Errors) -> Option<Arg> {
        let problem = match ty {
            Type::ImplTrait(_) => {
                Some("an #[sse] method's arguments need concrete types, not `impl Trait`")
            }
            Type::Reference(_) => {
                Some("an #[sse] method's arguments are axum extractors, taken by value")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            errors.push(error_with_help(
                ty.span(),
                problem,
                "use an extractor such as `Path<String>`, `Query<T>`, `HeaderMap` or `State<T>`",
            ));
            return None;
        }
        let kind = if last_segment_is(ty, "Path") {
            ArgKind::Path
        } else if last_segment_is(ty, "State") {
            ArgKind::State
        } else {
            ArgKind::Other
        };
        Some(Arg {
            ty: ty.clone(),
            kind,
        })
    }
}
