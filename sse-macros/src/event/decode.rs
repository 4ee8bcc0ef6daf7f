//! The generated `FromEvent` of `#[sse_event(decode)]`: the client's side,
//! an event type and its JSON data back to a value. It reads what
//! `expand::impls` writes: each variant's data in the same shape, its
//! named fields through a hidden owned struct with the same `#[serde]`
//! attributes.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::model::{EventModel, Kind, Variant};

pub fn impl_from_event(model: &EventModel) -> TokenStream {
    let ident = &model.ident;
    let arms = match &model.kind {
        Kind::Enum(variants) => {
            let arms = variants.iter().map(|variant| decode_arm(ident, variant));
            quote! { #(#arms)* }
        }
        Kind::Struct(name) => {
            let value = &name.value;
            let decode = quote_spanned! {ident.span()=>
                ::sse_runtime::__private::json_decode::<Self>(event_type, data)?
            };
            quote! { #value => #decode, }
        }
    };
    quote! {
        impl ::sse_runtime::FromEvent for #ident {
            fn from_event(
                event_type: &str,
                data: &str,
            ) -> ::core::result::Result<::core::option::Option<Self>, ::sse_runtime::DecodeError> {
                ::core::result::Result::Ok(::core::option::Option::Some(match event_type {
                    #arms
                    _ => return ::core::result::Result::Ok(::core::option::Option::None),
                }))
            }
        }
    }
}

/// `"name" => <the variant, its data decoded>,`
fn decode_arm(ident: &syn::Ident, variant: &Variant) -> TokenStream {
    let name = &variant.name.value;
    let variant_ident = &variant.ident;
    let value = match &variant.fields {
        syn::Fields::Unit => quote! {{
            ::sse_runtime::__private::json_decode::<()>(event_type, data)?;
            #ident::#variant_ident
        }},
        syn::Fields::Named(fields) => {
            let owned = format_ident!("__SseEventOwned{}", variant.ident);
            let definitions = fields.named.iter().map(|field| {
                let attrs = field
                    .attrs
                    .iter()
                    .filter(|attr| attr.path().is_ident("serde"));
                let name = &field.ident;
                let ty = &field.ty;
                quote! { #(#attrs)* #name: #ty }
            });
            let names: Vec<_> = fields.named.iter().map(|field| &field.ident).collect();
            quote! {{
                ::sse_runtime::__private::owned_payload_struct! {
                    #[allow(non_camel_case_types)]
                    struct #owned { #(#definitions),* }
                }
                let #owned { #(#names),* } =
                    ::sse_runtime::__private::json_decode::<#owned>(event_type, data)?;
                #ident::#variant_ident { #(#names),* }
            }}
        }
        syn::Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
            let ty = &fields.unnamed[0].ty;
            // Spanned at the field's type: a payload that is not
            // `Deserialize` is reported there.
            quote_spanned! {ty.span()=>
                #ident::#variant_ident(
                    ::sse_runtime::__private::json_decode::<#ty>(event_type, data)?,
                )
            }
        }
        syn::Fields::Unnamed(fields) => {
            let types = fields.unnamed.iter().map(|field| &field.ty);
            let names: Vec<_> = (0..fields.unnamed.len())
                .map(|index| format_ident!("__{}", index))
                .collect();
            let span = fields.span();
            quote_spanned! {span=> {
                let (#(#names),*) =
                    ::sse_runtime::__private::json_decode::<(#(#types),*)>(event_type, data)?;
                #ident::#variant_ident(#(#names),*)
            }}
        }
    };
    quote! { #name => #value, }
}

/// `FromEvent` with a body that never runs, beside the derive's errors.
pub fn stub_impl(ident: &syn::Ident) -> TokenStream {
    quote! {
        impl ::sse_runtime::FromEvent for #ident {
            fn from_event(
                _: &str,
                _: &str,
            ) -> ::core::result::Result<::core::option::Option<Self>, ::sse_runtime::DecodeError> {
                ::core::unreachable!("#[derive(SseEvent)] failed")
            }
        }
    }
}
