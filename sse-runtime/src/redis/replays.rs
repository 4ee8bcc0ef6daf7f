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

    /// See [`Connection::refresh_topology`].
    pub(super) fn refresh_topology(&self) {
        self.connection.refresh_topology();
    }

    /// Runs `read` in a place of its own, once more if the connection
    /// broke under it or the cluster changed while it waited: reads are safe
    /// to repeat, and a connection idle through a Redis restart fails its
    /// first command while it reconnects.
    pub(super) async fn read<T, F>(&self, read: impl Fn(Connection) -> F) -> redis::RedisResult<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let _place: SemaphorePermit<'_> = self
            .places
            .acquire()
            .await
            .expect("the replay places are never closed");
        let topology = self.connection.topology_generation();
        match read(self.connection.clone()).await {
            Err(error) if error.is_io_error() || error.is_connection_dropped() => {
                read(self.connection.clone()).await
            }
            // The cluster changed while the read waited: its answer may come
            // from a master no more (behind the new one). Read again.
            Ok(_) if self.connection.topology_generation() != topology => {
                read(self.connection.clone()).await
            }
            answer => answer,
        }
    }
}
