use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use sse_runtime::{MessageEvent, sse, sse_controller};

/// A stream that borrows the controller, with its lifetime hidden in the path.
struct Borrowing<'a>(&'a C);

impl Stream for Borrowing<'_> {
    type Item = MessageEvent;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<MessageEvent>> {
        Poll::Ready(None)
    }
}

#[derive(Clone)]
struct C;

#[sse_controller("/events")]
impl C {
    #[sse("/stream")]
    fn stream(&self) -> Borrowing {
        Borrowing(self)
    }
}

fn main() {}
