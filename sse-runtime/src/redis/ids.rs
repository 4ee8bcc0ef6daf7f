//! The ids of the Redis broker: Redis stream entry ids, and the SSE id of a
//! subscription, which is its position in its key's stream and in the
//! broadcast stream.

use std::fmt::Display;

/// A Redis stream entry id, `<milliseconds>-<sequence>`, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct EntryId(u64, u64);

impl EntryId {
    #[cfg(test)]
    pub(crate) fn new(millis: u64, sequence: u64) -> EntryId {
        EntryId(millis, sequence)
    }

    #[cfg(test)]
    pub(crate) fn millis(self) -> u64 {
        self.0
    }

    pub(crate) fn parse(id: &str) -> Option<EntryId> {
        let (ms, seq) = id.split_once('-')?;
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        Some(EntryId(number(ms)?, number(seq)?))
    }

    /// The entry `distance` milliseconds before this one, with the
    /// sequence `distance` carries (`<milliseconds back>-<sequence>`);
    /// `None` when that is before time began.
    pub(crate) fn back_by(self, distance: EntryId) -> Option<EntryId> {
        Some(EntryId(self.0.checked_sub(distance.0)?, distance.1))
    }

    /// Whether this is `0-0`: before any entry.
    pub(crate) fn is_start(self) -> bool {
        self == EntryId::default()
    }
}

impl Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// What a subscription has seen: the last entry of its key's stream and of
/// the broadcast stream. Its SSE id is `<key entry>` while no broadcast was
/// ever seen, else `<key entry>.<broadcast entry>`, so apps that never
/// broadcast keep plain entry ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Position {
    pub(crate) key: EntryId,
    pub(crate) broadcast: EntryId,
}

impl Position {
    pub(crate) fn parse(id: &str) -> Option<Position> {
        let (key, broadcast) = match id.split_once('.') {
            Some((key, broadcast)) => (EntryId::parse(key)?, EntryId::parse(broadcast)?),
            None => (EntryId::parse(id)?, EntryId::default()),
        };
        Some(Position { key, broadcast })
    }

    /// Each part the later of the two.
    pub(crate) fn max(self, other: Position) -> Position {
        Position {
            key: self.key.max(other.key),
            broadcast: self.broadcast.max(other.broadcast),
        }
    }

    /// Each part the earlier of the two.
    pub(crate) fn min(self, other: Position) -> Position {
        Position {
            key: self.key.min(other.key),
            broadcast: self.broadcast.min(other.broadcast),
        }
    }
}

impl Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.broadcast.is_start() {
            write!(f, "{}", self.key)
        } else {
            write!(f, "{}.{}", self.key, self.broadcast)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_reads_back_what_it_writes() {
        for id in [
            "0-0",
            "17-3",
            "17-3.18-0",
            "1700000000000-12.1700000000001-0",
        ] {
            assert_eq!(Position::parse(id).unwrap().to_string(), id);
        }
        assert_eq!(Position::parse("5-1.0-0").unwrap().to_string(), "5-1");
    }

    #[test]
    fn anything_else_is_not_a_position() {
        for id in [
            "",
            ".",
            "1",
            "1-",
            "-1",
            "1-1.",
            "1-1.2",
            "1-1.2-2.3-3",
            "a-1",
            "1-1 ",
            "+1-1",
        ] {
            assert_eq!(Position::parse(id), None, "{id:?}");
        }
    }
}
