//! Without the `compression` feature no stream is compressed: the
//! compressor is a type with no value, so the body's compressed paths are
//! never taken and cost nothing.

use std::io;

use bytes::Bytes;

/// Where one write's events end (never read without compression).
#[allow(dead_code)]
pub(crate) struct Segment {
    pub(crate) end: usize,
    pub(crate) shared: Option<Bytes>,
    pub(crate) no_event: bool,
}

/// Never built.
pub(crate) enum StreamCompressor {}

impl StreamCompressor {
    pub(crate) fn is_active(&self) -> bool {
        match *self {}
    }

    pub(crate) fn compress_events(
        &mut self,
        _frame: &[u8],
        _segments: &[Segment],
    ) -> io::Result<Bytes> {
        match *self {}
    }

    pub(crate) fn keep_alive(&mut self, _comment: &[u8]) -> io::Result<Bytes> {
        match *self {}
    }

    pub(crate) fn rest(&mut self) -> io::Result<Option<Bytes>> {
        match *self {}
    }

    pub(crate) fn finish(&mut self) -> io::Result<Bytes> {
        match *self {}
    }
}
