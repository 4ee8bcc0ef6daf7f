//! How many connections a server holds open: in all, and per peer address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::sync::lock;

/// Descriptors left for everything that is not an accepted connection
/// (the listener, outgoing connections to a database or Redis, files, the
/// runtime's own), when the limit comes from the descriptor limit.
const DESCRIPTOR_HEADROOM: u64 = 256;

/// Used where the descriptor limit cannot be read.
#[cfg(not(unix))]
const FALLBACK_DESCRIPTOR_LIMIT: u64 = 1024;

/// The default connection limit: the process's open-file limit (its soft
/// `RLIMIT_NOFILE`) less a headroom of 256 descriptors, or half the limit
/// when it is under 512. Accepting stops at this many connections instead of
/// failing with "too many open files".
pub fn default_max_connections() -> usize {
    let limit = descriptor_limit();
    let headroom = DESCRIPTOR_HEADROOM.min(limit / 2);
    usize::try_from(limit - headroom)
        .unwrap_or(usize::MAX)
        .max(1)
}

#[cfg(unix)]
fn descriptor_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
        // The semaphore that enforces the limit holds at most this many.
        .min(tokio::sync::Semaphore::MAX_PERMITS as u64)
        .min(u64::from(u32::MAX))
}

#[cfg(not(unix))]
fn descriptor_limit() -> u64 {
    FALLBACK_DESCRIPTOR_LIMIT
}

/// Open connections by peer address, for a per-address limit.
#[derive(Clone)]
pub(crate) struct PerPeer {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open connection of a peer; dropping it frees its place.
pub(crate) struct PeerSlot {
    peer: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerPeer {
    pub(crate) fn new(limit: usize) -> Self {
        PerPeer {
            limit: limit.max(1),
            open: Arc::default(),
        }
    }

    /// A place for one more connection of `peer`, or `None` at its limit.
    /// An IPv6 peer counts with its /64, which one client usually holds
    /// whole, so stepping through it does not evade the limit.
    pub(crate) fn admit(&self, peer: IpAddr) -> Option<PeerSlot> {
        let peer = peer_group(peer);
        let mut open = lock(&self.open);
        let count = open.entry(peer).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peer,
            open: Arc::clone(&self.open),
        })
    }

    #[cfg(test)]
    fn peers(&self) -> usize {
        self.open.lock().unwrap().len()
    }
}

/// The address a peer's connections count under: an IPv4 address (also
/// when it comes mapped into IPv6) as it is, an IPv6 address by its /64.
fn peer_group(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !((1u128 << 64) - 1),
            )),
        },
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                // A peer that left holds no memory.
                open.remove(&self.peer);
            }
        }
    }
}

/// The most connections answered `429` at once. Each holds its descriptor
/// for at most a second, apart from the connection limit, so a flood of
/// refused connections can neither take the places of admitted ones nor
/// exhaust descriptors; past this many, a refused connection is closed
/// without an answer.
pub(crate) const MAX_REFUSING: usize = 64;

/// Answers a connection over its address's limit with `429` and closes it,
/// within a bounded time, holding one of the [`MAX_REFUSING`] places.
pub(crate) async fn refuse(mut socket: TcpStream, refusal: OwnedSemaphorePermit) {
    const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
        content-type: text/plain\r\ncontent-length: 39\r\nconnection: close\r\n\r\n\
        too many connections from this address\n";
    let _refusal = refusal;
    let answer = async {
        socket.write_all(TOO_MANY).await?;
        socket.shutdown().await?;
        // Reads what the client sent, so closing does not reset the
        // connection before it has read the answer.
        let mut sink = [0u8; 1024];
        while tokio::io::AsyncReadExt::read(&mut socket, &mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ipv6_peer_counts_with_its_slash_64_and_a_mapped_ipv4_as_itself() {
        let per_peer = PerPeer::new(2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let first = per_peer.admit(a).unwrap();
        let second = per_peer.admit(b).unwrap();
        assert!(per_peer.admit(a).is_none(), "the /64 is at its limit");
        assert!(per_peer.admit(c).is_some(), "another /64 is not");
        drop((first, second));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let _one = per_peer.admit(v4).unwrap();
        let _two = per_peer.admit(mapped).unwrap();
        assert!(per_peer.admit(v4).is_none(), "mapped IPv4 is the same peer");
    }

    use super::*;

    #[test]
    fn a_peer_gets_at_most_its_limit_and_its_places_come_back() {
        let per_peer = PerPeer::new(2);
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        let first = per_peer.admit(one).unwrap();
        let second = per_peer.admit(one).unwrap();
        assert!(per_peer.admit(one).is_none());
        let other = per_peer.admit(two).unwrap();
        drop(first);
        let third = per_peer.admit(one).unwrap();
        drop((second, third, other));
        assert_eq!(
            per_peer.peers(),
            0,
            "peers with no connection are forgotten"
        );
    }

    #[test]
    fn the_default_leaves_headroom_below_the_descriptor_limit() {
        let limit = descriptor_limit();
        let max = default_max_connections() as u64;
        assert!(max >= 1 && max < limit, "{max} of {limit}");
        assert!(limit - max <= DESCRIPTOR_HEADROOM);
    }
}
