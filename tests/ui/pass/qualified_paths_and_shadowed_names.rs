//! The macros work through full paths with nothing imported, and the generated
//! code cannot be broken by user items named like the crates it uses.

#![allow(dead_code, non_camel_case_types)]

mod axum {}
mod futures_util {}
mod core {}
struct Arc;
struct Result;
struct Option;
struct Router;

#[derive(Clone)]
struct C;

#[sse_runtime::sse_controller("/c")]
impl C {
    #[sse_runtime::sse("/x")]
    fn x(&self) -> ::std::pin::Pin<Box<dyn ::futures_core::Stream<Item = sse_runtime::MessageEvent> + Send>> {
        Box::pin(::futures_util_real::stream::empty())
    }
}

extern crate futures_util as futures_util_real;

fn main() {
    let _app: ::axum_real::Router = C.router();
}

extern crate axum as axum_real;
