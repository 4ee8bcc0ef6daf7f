//! The derive input as events: each event's name (after `rename` and
//! `rename_all`), where it was written, and the shape of its payload.

use proc_macro2::Span;
use syn::spanned::Spanned;

use super::case::{self, Case};
use crate::errors::{Errors, error_with_help, spanned_error_with_help};

pub struct EventModel {
    pub ident: syn::Ident,
    pub kind: Kind,
    /// `#[sse_event(typescript)]`: describe the events for
    /// `sse_runtime::typescript::module`.
    pub typescript: bool,
    /// `#[sse_event(decode)]`: also `FromEvent`, the client's side (event
    /// type and JSON data back to a value).
    pub decode: bool,
}

pub enum Kind {
    /// Each variant is one event type.
    Enum(Vec<Variant>),
    /// One event type; the data is the value's own JSON.
    Struct(Name),
}

pub struct Variant {
    pub ident: syn::Ident,
    pub name: Name,
    pub fields: syn::Fields,
}

/// An event name and the span to report it at.
pub struct Name {
    pub value: String,
    pub span: Span,
}

/// What `#[sse_event(...)]` may say, and where.
#[derive(Default)]
struct EventAttributes {
    rename: Option<(String, Span)>,
    rename_all: Option<(Case, Span)>,
    typescript: Option<Span>,
    decode: Option<Span>,
}

const HELP_ON_ENUM: &str = "on an enum: #[sse_event(rename_all = \"snake_case\")]; \
    on a variant or a struct: #[sse_event(rename = \"name\")]; on the type: \
    #[sse_event(typescript)] and #[sse_event(decode)]";

impl EventModel {
    pub fn from_input(input: &syn::DeriveInput, errors: &mut Errors) -> Option<EventModel> {
        if !input.generics.params.is_empty() {
            errors.push(spanned_error_with_help(
                &input.generics,
                "#[derive(SseEvent)] does not support generic types",
                "derive it on a concrete type; wrap a generic payload in a variant of a \
                 concrete enum",
            ));
            return None;
        }
        let attributes = parse_attributes(&input.attrs, errors);
        let ident = input.ident.clone();
        let kind = match &input.data {
            syn::Data::Enum(data) => {
                if let Some((_, span)) = attributes.rename {
                    errors.push(error_with_help(
                        span,
                        "`rename` names one event; an enum has one per variant",
                        "put #[sse_event(rename = \"...\")] on a variant, or use rename_all here",
                    ));
                }
                if data.variants.is_empty() {
                    errors.push(spanned_error_with_help(
                        &input.ident,
                        "#[derive(SseEvent)] on an enum without variants: it has no event to send",
                        "add a variant per event type",
                    ));
                }
                let case = attributes.rename_all.map(|(case, _)| case);
                Kind::Enum(
                    data.variants
                        .iter()
                        .map(|variant| Variant::from_variant(variant, case, errors))
                        .collect(),
                )
            }
            syn::Data::Struct(_) => {
                if let Some((_, span)) = attributes.rename_all {
                    errors.push(error_with_help(
                        span,
                        "`rename_all` renames an enum's variants; a struct is one event",
                        "name the struct's event with #[sse_event(rename = \"...\")]",
                    ));
                }
                Kind::Struct(match attributes.rename {
                    Some((value, span)) => Name { value, span },
                    None => Name {
                        value: ident.to_string(),
                        span: ident.span(),
                    },
                })
            }
            syn::Data::Union(data) => {
                errors.push(error_with_help(
                    data.union_token.span,
                    "#[derive(SseEvent)] does not support unions",
                    "use an enum (one event type per variant) or a struct (one event type)",
                ));
                return None;
            }
        };
        Some(EventModel {
            ident,
            kind,
            typescript: attributes.typescript.is_some(),
            decode: attributes.decode.is_some(),
        })
    }
}

impl Variant {
    fn from_variant(variant: &syn::Variant, case: Option<Case>, errors: &mut Errors) -> Variant {
        let attributes = parse_attributes(&variant.attrs, errors);
        if let Some((_, span)) = attributes.rename_all {
            errors.push(error_with_help(
                span,
                "`rename_all` belongs on the enum, not on a variant",
                HELP_ON_ENUM,
            ));
        }
        if let Some(span) = attributes.typescript {
            errors.push(error_with_help(
                span,
                "`typescript` belongs on the enum, not on a variant",
                HELP_ON_ENUM,
            ));
        }
        if let Some(span) = attributes.decode {
            errors.push(error_with_help(
                span,
                "`decode` belongs on the enum, not on a variant",
                HELP_ON_ENUM,
            ));
        }
        let ident = variant.ident.clone();
        let name = match attributes.rename {
            Some((value, span)) => Name { value, span },
            None => {
                let written = ident.to_string();
                Name {
                    value: case.map_or_else(|| written.clone(), |case| case.apply(&written)),
                    span: ident.span(),
                }
            }
        };
        Variant {
            ident,
            name,
            fields: variant.fields.clone(),
        }
    }
}

/// Every `#[sse_event(...)]` of `attrs`, each key once.
fn parse_attributes(attrs: &[syn::Attribute], errors: &mut Errors) -> EventAttributes {
    let mut parsed = EventAttributes::default();
    for attr in attrs
        .iter()
        .filter(|attr| attr.path().is_ident("sse_event"))
    {
        let result = attr.parse_nested_meta(|meta| {
            let key = meta.path.get_ident().map(ToString::to_string);
            match key.as_deref() {
                Some("rename") => {
                    let value: syn::LitStr = meta.value()?.parse()?;
                    if parsed.rename.is_some() {
                        return Err(meta.error("`rename` is given twice"));
                    }
                    parsed.rename = Some((value.value(), value.span()));
                    Ok(())
                }
                Some("typescript") => {
                    if parsed.typescript.is_some() {
                        return Err(meta.error("`typescript` is given twice"));
                    }
                    parsed.typescript = Some(meta.path.span());
                    Ok(())
                }
                Some("decode") => {
                    if parsed.decode.is_some() {
                        return Err(meta.error("`decode` is given twice"));
                    }
                    parsed.decode = Some(meta.path.span());
                    Ok(())
                }
                Some("rename_all") => {
                    let value: syn::LitStr = meta.value()?.parse()?;
                    let Some(case) = Case::from_spelling(&value.value()) else {
                        return Err(error_with_help(
                            value.span(),
                            format!("unknown case {:?}", value.value()),
                            format!("rename_all takes one of {}", case::spellings()),
                        ));
                    };
                    if parsed.rename_all.is_some() {
                        return Err(meta.error("`rename_all` is given twice"));
                    }
                    parsed.rename_all = Some((case, value.span()));
                    Ok(())
                }
                _ => Err(error_with_help(
                    meta.path.span(),
                    format!(
                        "unknown #[sse_event] option `{}`",
                        meta.path
                            .get_ident()
                            .map_or_else(|| "?".to_owned(), ToString::to_string)
                    ),
                    HELP_ON_ENUM,
                )),
            }
        });
        errors.ok(result);
    }
    parsed
}
