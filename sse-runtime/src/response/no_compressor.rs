//! Without the `compression` feature no stream is compressed: the
//! compressor is a type with no value, so the body's compressed paths are
//! never taken and cost nothing.

use std::io;

use bytes::Bytes;

use super::segments::Segments;

/// Never built.
pub(crate) enum StreamCompressor {}

impl StreamCompressor {
    pub(crate) fn is_active(&self) -> bool {
        match *self {}
    }

    pub(crate) fn compress_events(
        &mut self,
        _frame: &[u8],
        _segments: &Segments,
    ) -> io::Result<Bytes> {
        match *self {}
    }

    pub(crate) fn opening(&mut self) -> Option<Bytes> {
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
