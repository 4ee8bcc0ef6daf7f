//! This instance's interest: the channels it is subscribed to (sharded
//! PUB/SUB, `SSUBSCRIBE`), one per key with subscribers here, and nothing
//! else, so it receives only the events of its own keys.
//!
//! One task owns the links and every (un)subscribe, so the commands for a
//! channel go out in the order they were asked for: a key left and joined
//! again is subscribed at the end, never unsubscribed. Requests that arrive
//! together go out together, one pipeline per node.
//!
//! The task also keeps the channels where the slots are: when a link breaks
//! or a slot moves (the cluster's epoch rose, or the node unsubscribed us),
//! the channels affected are marked lost (their keys pass over messages
//! until confirmed again, then catch up from their streams) and subscribed
//! again at their slot's master, retried every [`TICK`] until it works.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use super::Inner;
use super::links::Links;
use super::local::Channel;
use crate::sync::lock;

/// How often the task drops idle keys, retries channels not subscribed,
/// and checks the cluster's topology.
const TICK: Duration = Duration::from_millis(250);

/// The most requests sent in one round.
const BATCH: usize = 1024;

/// What the broker asks of the interest task.
pub(super) enum Request {
    /// Subscribe to a key's channel; answered once Redis confirmed it.
    Join(Arc<str>, oneshot::Sender<redis::RedisResult<()>>),
    /// Unsubscribe: the key's last subscriber here left.
    Leave(Arc<str>),
    /// The link with this number broke.
    LinkLost(u64),
    /// A node unsubscribed this channel (its slot moved).
    Dropped(Arc<str>),
}

/// The sending side of the interest task.
pub(super) struct Interest {
    requests: UnboundedSender<Request>,
}

impl Interest {
    pub(super) fn new(requests: UnboundedSender<Request>) -> Interest {
        Interest { requests }
    }

    /// Subscribes to `channel`, once Redis confirmed it.
    pub(super) async fn join(&self, channel: &str) -> redis::RedisResult<()> {
        let (joined, answer) = oneshot::channel();
        let stopped =
            || redis::RedisError::from((redis::ErrorKind::Client, "the SSE Redis broker stopped"));
        self.requests
            .send(Request::Join(Arc::from(channel), joined))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(super) fn leave(&self, channel: Arc<str>) {
        let _ = self.requests.send(Request::Leave(channel));
    }
}

/// One (un)subscribe in a round.
enum Step {
    Subscribe(Arc<str>, Option<oneshot::Sender<redis::RedisResult<()>>>),
    Unsubscribe(Arc<str>),
}

impl Step {
    fn channel(&self) -> &Arc<str> {
        match self {
            Step::Subscribe(channel, _) | Step::Unsubscribe(channel) => channel,
        }
    }
}

/// The interest task's state.
struct Task {
    inner: Weak<Inner>,
    links: Links,
    /// Each subscribed channel's node.
    homes: HashMap<Arc<str>, Arc<str>>,
    /// Channels of keys here that are not subscribed (their link broke or
    /// their slot moved), retried every [`TICK`].
    homeless: HashSet<Arc<str>>,
    /// The commands' topology generation last seen (on a cluster).
    topology: u64,
}

/// The interest task: runs while the broker lives.
pub(super) async fn interest_loop(
    inner: Weak<Inner>,
    links: Links,
    mut requests: UnboundedReceiver<Request>,
) {
    let mut task = Task {
        inner,
        links,
        homes: HashMap::new(),
        homeless: HashSet::new(),
        topology: 0,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            received = requests.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return;
                }
                task.handle(batch.drain(..)).await;
            }
            _ = tick.tick() => {
                if !task.tend().await {
                    return;
                }
            }
        }
    }
}

impl Task {
    /// Runs one batch of requests: (un)subscribes in the order asked, one
    /// pipeline per node.
    async fn handle(&mut self, requests: impl Iterator<Item = Request>) {
        let mut steps = Vec::new();
        let mut moved = false;
        for request in requests {
            match request {
                Request::Join(channel, joined) => {
                    self.homeless.remove(&channel);
                    steps.push(Step::Subscribe(channel, Some(joined)));
                }
                Request::Leave(channel) => {
                    self.homeless.remove(&channel);
                    if self.homes.contains_key(&channel) {
                        steps.push(Step::Unsubscribe(channel));
                    }
                }
                Request::LinkLost(number) => {
                    if let Some(node) = self.links.node_of_link(number) {
                        tracing::warn!(node = &*node, "SSE Redis PUB/SUB link lost; resubscribing");
                        self.lose_link(&node);
                        moved = true;
                    }
                }
                Request::Dropped(channel) => {
                    self.mark_lost(vec![channel]);
                    moved = true;
                }
            }
        }
        if moved {
            // A failover may be under way: where are the slots now?
            let _ = self.links.refresh_slots().await;
        }
        self.run(steps).await;
    }

    /// Closes the link to `node` (broken, or not answering) and marks every
    /// channel subscribed through it lost: they are subscribed again and
    /// their keys catch up. Never a link closed with channels still counting
    /// on it, which would leave them silent.
    fn lose_link(&mut self, node: &Arc<str>) {
        self.links.drop_link(node);
        let lost: Vec<Arc<str>> = self
            .homes
            .iter()
            .filter(|(_, home)| *home == node)
            .map(|(channel, _)| Arc::clone(channel))
            .collect();
        self.mark_lost(lost);
    }

    /// Marks `channels` lost: their keys pass over messages until their
    /// channel is confirmed again, then catch up; they are resubscribed.
    fn mark_lost(&mut self, channels: Vec<Arc<str>>) {
        let inner = self.inner.upgrade();
        let mut local = inner.as_ref().map(|inner| lock(&inner.local));
        for channel in channels {
            self.homes.remove(&channel);
            if let Some(key) = local.as_mut().and_then(|local| local.get_mut(&channel)) {
                key.channel = Channel::Lost;
                key.missed = true;
                self.homeless.insert(channel);
            }
        }
    }

    /// The periodic work: drop idle keys, follow the slots, resubscribe the
    /// homeless. `false` once the broker is gone or shut down.
    async fn tend(&mut self) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        if inner.shut_down.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        let mut steps: Vec<Step> = inner
            .forget_idle_keys()
            .into_iter()
            .filter(|channel| {
                self.homeless.remove(channel);
                self.homes.contains_key(channel)
            })
            .map(Step::Unsubscribe)
            .collect();
        let topology = inner.commands.topology_generation();
        drop(inner);
        if topology != self.topology {
            self.topology = topology;
            if self.links.refresh_slots().await.is_ok() {
                let moved: Vec<Arc<str>> = self
                    .homes
                    .iter()
                    .filter(|(channel, home)| self.links.home_of(channel).as_ref() != Some(*home))
                    .map(|(channel, _)| Arc::clone(channel))
                    .collect();
                if !moved.is_empty() {
                    tracing::warn!(
                        channels = moved.len(),
                        "SSE Redis Cluster slots moved; resubscribing their channels"
                    );
                }
                self.mark_lost(moved);
            }
        }
        steps.extend(
            self.homeless
                .iter()
                .map(|channel| Step::Subscribe(Arc::clone(channel), None)),
        );
        self.run(steps).await;
        self.drop_unused_links();
        true
    }

    /// Links to nodes that hold none of our channels now (a demoted master,
    /// possibly frozen) are closed: nothing from them counts.
    fn drop_unused_links(&mut self) {
        for node in self.links.linked_nodes() {
            if !self.homes.values().any(|home| *home == node) {
                self.links.drop_link(&node);
            }
        }
    }

    /// Sends `steps`, grouped by node (in order within each), all nodes at
    /// once; records where each channel is subscribed and answers joins.
    async fn run(&mut self, steps: Vec<Step>) {
        if steps.is_empty() {
            return;
        }
        let mut by_node: HashMap<Arc<str>, Vec<Step>> = HashMap::new();
        let mut refreshed = false;
        for step in steps {
            let home = match &step {
                Step::Unsubscribe(channel) => self.homes.remove(channel),
                Step::Subscribe(channel, _) => {
                    let mut home = self.links.home_of(channel);
                    if home.is_none() && !refreshed {
                        refreshed = true;
                        let _ = self.links.refresh_slots().await;
                        home = self.links.home_of(channel);
                    }
                    home
                }
            };
            match (home, step) {
                (Some(node), step) => by_node.entry(node).or_default().push(step),
                (None, Step::Subscribe(channel, joined)) => {
                    let unserved = redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "no Redis node serves this key's slot now",
                    ));
                    self.failed(channel, joined, unserved);
                }
                (None, Step::Unsubscribe(_)) => {}
            }
        }
        let mut rounds = Vec::with_capacity(by_node.len());
        for (node, steps) in by_node {
            let connection = match self.links.link(&node).await {
                Ok(link) => link.connection.clone(),
                Err(error) => {
                    self.lose_link(&node);
                    for step in steps {
                        if let Step::Subscribe(channel, joined) = step {
                            self.failed(channel, joined, error.clone());
                        }
                    }
                    continue;
                }
            };
            rounds.push(async move {
                let mut connection = connection;
                let mut pipeline = redis::pipe();
                for step in &steps {
                    let verb = match step {
                        Step::Subscribe(..) => "SSUBSCRIBE",
                        Step::Unsubscribe(_) => "SUNSUBSCRIBE",
                    };
                    pipeline.cmd(verb).arg(&**step.channel()).ignore();
                }
                let answer: redis::RedisResult<()> = pipeline.query_async(&mut connection).await;
                (node, steps, answer)
            });
        }
        for (node, steps, answer) in futures_util::future::join_all(rounds).await {
            if let Err(error) = &answer {
                tracing::warn!(%error, node = &*node, "SSE Redis (un)subscribe failed");
                self.lose_link(&node);
            }
            for step in steps {
                let Step::Subscribe(channel, joined) = step else {
                    continue;
                };
                match &answer {
                    Ok(()) => {
                        self.homeless.remove(&channel);
                        self.homes.insert(channel, Arc::clone(&node));
                        if let Some(joined) = joined {
                            let _ = joined.send(Ok(()));
                        }
                    }
                    Err(error) => self.failed(channel, joined, error.clone()),
                }
            }
        }
    }

    /// A subscribe that did not go through: a join is told (it retries);
    /// a resubscribe stays homeless and is retried at the next tick.
    fn failed(
        &mut self,
        channel: Arc<str>,
        joined: Option<oneshot::Sender<redis::RedisResult<()>>>,
        error: redis::RedisError,
    ) {
        match joined {
            Some(joined) => {
                let _ = joined.send(Err(error));
            }
            None => {
                self.homeless.insert(channel);
            }
        }
    }
}
