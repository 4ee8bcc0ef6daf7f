//! Reads for resumes, apart from everything else: a connection of their
//! own, and a bound on how many run at once.
//!
//! After a deploy, every browser reconnects within a few seconds, each
//! with its `Last-Event-ID`, and each replay reads pages of history. On
//! the connection that sends share, a thousand of them queued tens of
//! megabytes in front of every send, which then timed out (`503`), and the
//! replays timed out with them. Here they queue for one of
//! [`CONCURRENT_REPLAY_READS`] places instead, each read a page of about
//! 64 KiB, so the bytes in flight stay about 1 MiB however many resume,
//! and sends never wait behind them.

use tokio::sync::{Semaphore, SemaphorePermit};

use super::connection::{Client, Connection};

/// How many resume reads (a coverage check, or one page) run at once on
/// one instance.
pub(super) const CONCURRENT_REPLAY_READS: usize = 16;

/// The resumes' connection and their places on it.
pub(super) struct ReplayReads {
    connection: Connection,
    places: Semaphore,
}

impl ReplayReads {
    pub(super) async fn connect(client: &Client) -> redis::RedisResult<ReplayReads> {
        Ok(ReplayReads {
            connection: client.shared_connection().await?,
            places: Semaphore::new(CONCURRENT_REPLAY_READS),
        })
    }

    /// Waits for a place, then the connection to read on while holding it.
    pub(super) async fn place(&self) -> (SemaphorePermit<'_>, Connection) {
        let place = self
            .places
            .acquire()
            .await
            .expect("the replay places are never closed");
        (place, self.connection.clone())
    }
}
