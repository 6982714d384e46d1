//! The member's heartbeats, on a task of their own.
//!
//! A KIP-848 member must heartbeat within its session, or the coordinator
//! fences it and gives its partitions away. Processing a batch can take long:
//! an alert producer whose buffer is full waits for acknowledgements. So the
//! heartbeats run on their own task with their own coordinator connection,
//! and a slow batch cannot delay them.
//!
//! The task reports the partitions the member owns (the member tells it
//! through a watch channel, and a change sends the next heartbeat at once, to
//! acknowledge it) and passes on what the coordinator says: a new target
//! assignment (kept in a watch channel: only the latest matters, and
//! publishing it never waits for the member), a fence, a refusal. The member applies assignments itself,
//! between batches, in the order partitions must change hands: stop fetching,
//! commit, then report the partition gone.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::coordinator::{self, CoordinatorError, GroupCoordinator, GroupError};
use crate::kafka::retry::Backoff;
use crate::lock::lock;

/// The member's identity in the group, as the last heartbeat left it.
#[derive(Debug, Clone)]
pub(super) struct Identity {
    /// Member id (ours until the coordinator names another).
    pub(super) member_id: String,
    /// Member epoch; 0 while joining.
    pub(super) epoch: i32,
    /// The interval the coordinator asks for.
    pub(super) interval: Duration,
}

/// What the coordinator said that the member must act on.
#[derive(Debug)]
pub(super) enum GroupEvent {
    /// The member's target assignment: these partitions of the topic.
    Assigned(BTreeSet<i32>),
    /// The group no longer knows this member at its epoch. The member gives up
    /// its partitions, then calls [`Heartbeats::rejoin`].
    Fenced,
    /// The coordinator refused the member in a way retrying cannot fix.
    Refused(GroupError),
}

/// What the heartbeat task needs to know about the group.
pub(super) struct GroupSpec {
    /// The group's coordinator, a connection of the task's own.
    pub(super) coordinator: GroupCoordinator,
    /// The group id, for log lines.
    pub(super) group_id: String,
    /// The topic subscribed to.
    pub(super) topic: String,
    /// Its id, which assignments name.
    pub(super) topic_id: uuid::Uuid,
    /// How long the group gives the member to hand partitions back.
    pub(super) rebalance_timeout: Duration,
}

/// The running heartbeat task, from the member's side.
pub(super) struct Heartbeats {
    identity: Arc<Mutex<Identity>>,
    owned: watch::Sender<Vec<i32>>,
    rejoin: mpsc::Sender<()>,
    events: mpsc::Receiver<GroupEvent>,
    target: watch::Receiver<Option<BTreeSet<i32>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Heartbeats {
    /// Starts heartbeating as `member_id`, joining the group.
    pub(super) fn start(group: GroupSpec, member_id: String) -> Self {
        let identity = Arc::new(Mutex::new(Identity {
            member_id,
            epoch: 0,
            interval: Duration::from_secs(1),
        }));
        let (owned, owned_rx) = watch::channel(Vec::new());
        let (rejoin, rejoin_rx) = mpsc::channel(1);
        // Only fences and refusals: after either the task waits or stops.
        let (events_tx, events) = mpsc::channel(2);
        let (target_tx, target) = watch::channel(None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            HeartbeatTask {
                group,
                identity: Arc::clone(&identity),
                owned: owned_rx,
                rejoin: rejoin_rx,
                events: events_tx,
                target: target_tx,
                stop: stop.clone(),
            }
            .run(),
        );
        Heartbeats {
            identity,
            owned,
            rejoin,
            events,
            target,
            stop,
            task,
        }
    }

    /// The member's id and epoch now.
    pub(super) fn identity(&self) -> Identity {
        lock(&self.identity).clone()
    }

    /// Reports the partitions owned now; the next heartbeat goes at once.
    pub(super) fn report_owned(&self, partitions: Vec<i32>) {
        self.owned.send_replace(partitions);
    }

    /// The next thing the coordinator said: a fence or refusal, or the latest
    /// target assignment. `None` once the task has ended. Cancel-safe.
    pub(super) async fn next_event(&mut self) -> Option<GroupEvent> {
        loop {
            tokio::select! {
                biased;
                event = self.events.recv() => return event,
                changed = self.target.changed() => {
                    changed.ok()?;
                    if let Some(target) = self.target.borrow_and_update().clone() {
                        return Some(GroupEvent::Assigned(target));
                    }
                }
            }
        }
    }

    /// After a fence, once every partition is given up: join again as a new member epoch.
    pub(super) async fn rejoin(&self) {
        let _ = self.rejoin.send(()).await;
    }

    /// Stops heartbeating and returns the identity to leave the group with.
    pub(super) async fn stop(self) -> Identity {
        self.stop.cancel();
        let _ = self.task.await;
        lock(&self.identity).clone()
    }
}

struct HeartbeatTask {
    group: GroupSpec,
    identity: Arc<Mutex<Identity>>,
    owned: watch::Receiver<Vec<i32>>,
    rejoin: mpsc::Receiver<()>,
    events: mpsc::Sender<GroupEvent>,
    target: watch::Sender<Option<BTreeSet<i32>>>,
    stop: CancellationToken,
}

/// What one heartbeat asks of the loop.
enum Next {
    /// The next heartbeat after this long.
    After(Duration),
    /// The heartbeat failed: the next after a growing pause.
    Retry,
    /// Wait for the member to give its partitions up, then rejoin.
    Rejoin,
    /// Stop heartbeating.
    Stop,
}

impl HeartbeatTask {
    async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut next_at = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                changed = self.owned.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(next_at) => {}
            }
            next_at = match self.heartbeat().await {
                Next::After(pause) => {
                    backoff.reset();
                    Instant::now() + pause
                }
                Next::Retry => Instant::now() + backoff.next_delay(),
                Next::Rejoin => {
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = self.rejoin.recv() => {}
                    }
                    lock(&self.identity).epoch = 0;
                    Instant::now()
                }
                Next::Stop => return,
            };
        }
    }

    /// One heartbeat, reporting the partitions owned now.
    async fn heartbeat(&mut self) -> Next {
        let owned = self.owned.borrow_and_update().clone();
        let Identity {
            member_id, epoch, ..
        } = lock(&self.identity).clone();
        let joining = epoch == 0;
        let request = ConsumerGroupHeartbeatRequest::default()
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(if joining {
                i32::try_from(self.group.rebalance_timeout.as_millis()).unwrap_or(i32::MAX)
            } else {
                -1
            })
            .with_subscribed_topic_names(
                joining.then(|| vec![TopicName(StrBytes::from_string(self.group.topic.clone()))]),
            )
            .with_topic_partitions(Some(coordinator::owned_partitions(
                self.group.topic_id,
                &owned,
            )));
        let response = match self.group.coordinator.heartbeat(request).await {
            Ok(response) => response,
            Err(CoordinatorError::Group(error)) if error.is_fenced() => {
                tracing::warn!(
                    "member {member_id} was fenced by the group ({error}); giving up its partitions and rejoining"
                );
                // A target of the fenced epoch must not be applied after the rejoin.
                self.target.send_replace(None);
                return match self.events.send(GroupEvent::Fenced).await {
                    Ok(()) => Next::Rejoin,
                    Err(_) => Next::Stop,
                };
            }
            Err(CoordinatorError::Group(error))
                if !error.is_coordinator_change() && refused_for_good(&error) =>
            {
                let _ = self.events.send(GroupEvent::Refused(error)).await;
                return Next::Stop;
            }
            Err(error) => {
                tracing::warn!("heartbeat to the group coordinator failed: {error}; retrying");
                return Next::Retry;
            }
        };
        let interval = {
            let mut identity = lock(&self.identity);
            if let Some(id) = &response.member_id {
                identity.member_id = id.to_string();
            }
            identity.epoch = response.member_epoch;
            if response.heartbeat_interval_ms > 0 {
                identity.interval = Duration::from_millis(response.heartbeat_interval_ms as u64);
            }
            if joining {
                tracing::info!(
                    "joined group {} as member {} (epoch {})",
                    self.group.group_id,
                    identity.member_id,
                    identity.epoch
                );
            }
            identity.interval
        };
        let Some(assignment) = response.assignment else {
            return Next::After(interval);
        };
        let target: BTreeSet<i32> = assignment
            .topic_partitions
            .iter()
            .filter(|t| t.topic_id == self.group.topic_id)
            .flat_map(|t| t.partitions.iter().copied())
            .collect();
        self.target.send_replace(Some(target));
        Next::After(interval)
    }
}

/// Errors no retry fixes.
fn refused_for_good(error: &GroupError) -> bool {
    use kafka_protocol::ResponseError as E;
    matches!(
        error.error,
        E::GroupAuthorizationFailed
            | E::TopicAuthorizationFailed
            | E::UnsupportedVersion
            | E::UnsupportedAssignor
            | E::InvalidRequest
            | E::GroupMaxSizeReached
            | E::GroupIdNotFound
    )
}
