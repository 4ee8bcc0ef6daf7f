//! Collects every error with its span, so one compile reports every mistake.

use std::fmt::Display;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;

/// A mistake and what to do about it: the message, then a `= help:` line.
/// On stable Rust a proc-macro error carries one message, so the help is
/// part of it (rustc shows it above the code snippet, not below as its own
/// help notes); one helper keeps every error in that one layout.
pub fn error_with_help(span: Span, message: impl Display, help: impl Display) -> syn::Error {
    syn::Error::new(span, format!("{message}\n\n= help: {help}"))
}

/// [`error_with_help`], spanning `tokens`.
pub fn spanned_error_with_help(
    tokens: impl ToTokens,
    message: impl Display,
    help: impl Display,
) -> syn::Error {
    syn::Error::new_spanned(tokens, format!("{message}\n\n= help: {help}"))
}

#[derive(Default)]
pub struct Errors {
    combined: Option<syn::Error>,
}

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.combined {
            Some(combined) => combined.combine(error),
            None => self.combined = Some(error),
        }
    }

    /// Keeps the value, or records its error.
    pub fn ok<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.combined.is_none()
    }

    /// Every collected error as `compile_error!` invocations.
    pub fn into_compile_errors(self) -> TokenStream {
        self.combined
            .map(|error| error.to_compile_error())
            .unwrap_or_default()
    }
}
