use sse_runtime::sse_controller;

#[sse_controller("/events")]
struct C;

fn main() {}
