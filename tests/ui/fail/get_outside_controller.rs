use sse_runtime::get;

struct C;

impl C {
    #[get("/status")]
    fn status() -> &'static str {
        "ok"
    }
}

fn main() {}
