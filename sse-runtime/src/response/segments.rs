//! Where the events of one write end, and each one's shared bytes: what a
//! compressed stream needs to compress a batch event by event (see
//! [`lineage`](super::lineage)).

use bytes::Bytes;

/// Where one event (or bytes that are no event) ends in a write's bytes.
#[cfg_attr(not(feature = "compression"), allow(dead_code))]
pub(crate) struct Segment {
    pub(crate) end: usize,
    /// The event's bytes as other streams may carry them too.
    pub(crate) shared: Option<Bytes>,
    /// Bytes that are no event (the `retry:` field, a resume point, a
    /// keep-alive): while the stream holds no encoder they go out
    /// uncompressed, so that a stream builds none before its first event.
    pub(crate) no_event: bool,
}

/// The segments of the write being built. The first is held inline: most
/// writes carry one event, and a stream that allocated for it between
/// events would leave that memory behind, freed but resident, when it goes
/// quiet.
#[derive(Default)]
pub(crate) struct Segments {
    first: Option<Segment>,
    more: Vec<Segment>,
}

impl Segments {
    /// One segment.
    pub(crate) fn one(segment: Segment) -> Segments {
        Segments {
            first: Some(segment),
            more: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, segment: Segment) {
        match self.first {
            None => self.first = Some(segment),
            Some(_) => self.more.push(segment),
        }
    }

    /// Forgets the segments, keeping the room for the next write's.
    pub(crate) fn clear(&mut self) {
        self.first = None;
        self.more.clear();
    }

    /// Forgets the segments and gives back their room (the stream rests).
    pub(crate) fn release(&mut self) {
        *self = Segments::default();
    }

    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.first.iter().chain(&self.more)
    }
}

impl FromIterator<Segment> for Segments {
    fn from_iter<I: IntoIterator<Item = Segment>>(segments: I) -> Segments {
        let mut all = Segments::default();
        for segment in segments {
            all.push(segment);
        }
        all
    }
}
