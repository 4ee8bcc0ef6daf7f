//! Collects every error with its span, so one compile reports every mistake.

use proc_macro2::TokenStream;

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
