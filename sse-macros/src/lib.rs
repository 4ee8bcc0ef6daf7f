//! placeholder
use proc_macro::TokenStream;
#[proc_macro_attribute]
pub fn sse_controller(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
#[proc_macro_attribute]
pub fn sse(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
