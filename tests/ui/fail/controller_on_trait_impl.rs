use sse_runtime::sse_controller;

trait Service {}
struct C;

#[sse_controller("/events")]
impl Service for C {}

fn main() {}
