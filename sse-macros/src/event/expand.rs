//! The generated code: `SseEvent` (names and JSON data), `SseItem` (so a
//! stream may yield the type), and, for `#[sse_event(typescript)]`, the
//! description `typescript::module` writes the browser side from.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::model::{EventModel, Kind, Variant};

pub fn impls(model: &EventModel) -> TokenStream {
    let ident = &model.ident;
    let (names, event_type_arms, to_event_arms, describe, helpers) = match &model.kind {
        Kind::Enum(variants) => {
            let names: Vec<&str> = variants.iter().map(|v| v.name.value.as_str()).collect();
            let event_type_arms = variants.iter().map(|variant| {
                let pattern = pattern(ident, variant, false);
                let name = &variant.name.value;
                quote! { #pattern => ::sse_runtime::EventType::new(#name), }
            });
            let to_event_arms = variants.iter().map(|variant| to_event_arm(ident, variant));
            let describe = variants.iter().map(describe_variant);
            let helpers = variants
                .iter()
                .filter_map(|variant| payload_struct(variant, model.typescript));
            (
                names,
                quote! { match self { #(#event_type_arms)* } },
                quote! { match self { #(#to_event_arms)* } },
                quote! { #(#describe)* },
                quote! { #(#helpers)* },
            )
        }
        Kind::Struct(name) => {
            let value = &name.value;
            let data = quote_spanned! {ident.span()=> ::sse_runtime::__private::json_data(self)? };
            (
                vec![value.as_str()],
                quote! { ::sse_runtime::EventType::new(#value) },
                data,
                quote! { events.named::<Self>(#value); },
                TokenStream::new(),
            )
        }
    };
    let typescript = model.typescript.then(|| {
        quote! {
            ::sse_runtime::__private::typescript! {
                impl ::sse_runtime::typescript::TypeScriptEvents for #ident {
                    fn describe(events: &mut ::sse_runtime::typescript::EventMap) {
                        #describe
                    }
                }
            }
        }
    });
    let decode = model.decode.then(|| super::decode::impl_from_event(model));
    quote! {
        const _: () = {
            #helpers

            impl ::sse_runtime::SseEvent for #ident {
                const EVENT_TYPES: &'static [&'static str] = &[#(#names),*];

                fn event_type(&self) -> ::sse_runtime::EventType {
                    #event_type_arms
                }

                fn to_event(
                    &self,
                ) -> ::core::result::Result<::sse_runtime::MessageEvent, ::sse_runtime::EventError> {
                    let event: ::sse_runtime::MessageEvent = #to_event_arms;
                    ::core::result::Result::Ok(
                        event.with_type(<Self as ::sse_runtime::SseEvent>::event_type(self)),
                    )
                }
            }

            impl ::sse_runtime::SseItem for #ident {
                fn encode_into(
                    self,
                    buf: &mut ::sse_runtime::__private::BytesMut,
                ) -> ::core::result::Result<(), ::sse_runtime::ItemError> {
                    ::sse_runtime::__private::encode_typed(&self, buf)
                }
            }

            #typescript

            #decode
        };
    }
}

/// `Ident::Variant { a, b }`, `Ident::Variant(__0, __1)` or `Ident::Variant`,
/// binding the fields when `bind`, else matching any.
fn pattern(ident: &syn::Ident, variant: &Variant, bind: bool) -> TokenStream {
    let name = &variant.ident;
    match &variant.fields {
        syn::Fields::Unit => quote! { #ident::#name },
        _ if !bind => match &variant.fields {
            syn::Fields::Named(_) => quote! { #ident::#name { .. } },
            _ => quote! { #ident::#name(..) },
        },
        syn::Fields::Named(fields) => {
            let names = fields.named.iter().map(|field| &field.ident);
            quote! { #ident::#name { #(#names),* } }
        }
        syn::Fields::Unnamed(fields) => {
            let names = (0..fields.unnamed.len()).map(|index| format_ident!("__{}", index));
            quote! { #ident::#name(#(#names),*) }
        }
    }
}

/// The name of the hidden struct that carries a struct variant's fields as
/// its JSON object.
fn payload_ident(variant: &Variant) -> syn::Ident {
    format_ident!("__SseEventPayload{}", variant.ident)
}

/// For a variant with named fields, a struct of references to them with their
/// `#[serde]` (and `#[ts]`) attributes, whose JSON is the event's data.
fn payload_struct(variant: &Variant, typescript: bool) -> Option<TokenStream> {
    let syn::Fields::Named(fields) = &variant.fields else {
        return None;
    };
    let payload = payload_ident(variant);
    let fields = fields.named.iter().map(|field| {
        let attrs = field
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident("serde") || attr.path().is_ident("ts"));
        let name = &field.ident;
        let ty = &field.ty;
        quote! { #(#attrs)* #name: &'__sse #ty }
    });
    let define = if typescript {
        quote! { ::sse_runtime::__private::payload_struct_ts! }
    } else {
        quote! { ::sse_runtime::__private::payload_struct! }
    };
    Some(quote! {
        #define {
            #[allow(non_camel_case_types)]
            struct #payload<'__sse> { #(#fields),* }
        }
    })
}

fn to_event_arm(ident: &syn::Ident, variant: &Variant) -> TokenStream {
    let pattern = pattern(ident, variant, true);
    let data = match &variant.fields {
        syn::Fields::Unit => quote! { ::sse_runtime::MessageEvent::new("null") },
        syn::Fields::Named(fields) => {
            let payload = payload_ident(variant);
            let names = fields.named.iter().map(|field| &field.ident);
            quote! { ::sse_runtime::__private::json_data(&#payload { #(#names),* })? }
        }
        syn::Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
            let ty = &fields.unnamed[0].ty;
            // Spanned at the field's type: a payload that is not
            // `Serialize` is reported there.
            quote_spanned! {ty.span()=> ::sse_runtime::__private::json_data(__0)? }
        }
        syn::Fields::Unnamed(fields) => {
            let names = (0..fields.unnamed.len()).map(|index| format_ident!("__{}", index));
            let span = fields.span();
            quote_spanned! {span=> ::sse_runtime::__private::json_data(&(#(#names),*))? }
        }
    };
    quote! { #pattern => #data, }
}

/// How `typescript::module` learns the variant's name and data type.
fn describe_variant(variant: &Variant) -> TokenStream {
    let name = &variant.name.value;
    match &variant.fields {
        syn::Fields::Unit => quote! { events.null(#name); },
        syn::Fields::Named(_) => {
            let payload = payload_ident(variant);
            quote! { events.inline::<#payload<'static>>(#name); }
        }
        syn::Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
            let ty = &fields.unnamed[0].ty;
            quote_spanned! {ty.span()=> events.named::<#ty>(#name); }
        }
        syn::Fields::Unnamed(fields) => {
            let types = fields.unnamed.iter().map(|field| &field.ty);
            quote! { events.named::<(#(#types),*)>(#name); }
        }
    }
}

/// `SseEvent` and `SseItem` for `input` with bodies that never run: what the
/// derive emits beside its errors, so the rest of the program type-checks.
/// None for a generic type, which the derive refuses: a stub would bring
/// bound errors of its own.
pub fn stub_impls(input: &syn::DeriveInput) -> TokenStream {
    if !input.generics.params.is_empty() {
        return TokenStream::new();
    }
    let ident = &input.ident;
    let decode = super::decode::stub_impl(ident);
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        impl #impl_generics ::sse_runtime::SseEvent for #ident #type_generics #where_clause {
            const EVENT_TYPES: &'static [&'static str] = &[];

            fn event_type(&self) -> ::sse_runtime::EventType {
                ::core::unreachable!("#[derive(SseEvent)] failed")
            }

            fn to_event(
                &self,
            ) -> ::core::result::Result<::sse_runtime::MessageEvent, ::sse_runtime::EventError> {
                ::core::unreachable!("#[derive(SseEvent)] failed")
            }
        }

        impl #impl_generics ::sse_runtime::SseItem for #ident #type_generics #where_clause {
            fn encode_into(
                self,
                _: &mut ::sse_runtime::__private::BytesMut,
            ) -> ::core::result::Result<(), ::sse_runtime::ItemError> {
                ::core::unreachable!("#[derive(SseEvent)] failed")
            }
        }

        #decode
    }
}
