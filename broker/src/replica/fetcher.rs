//! A follower's fetcher: one task per source broker, batching every
//! partition this broker follows there into one long-polling `ReplicaFetch`.
//!
//! Each round sends, per partition, the log end (every offset below it is
//! here, and fsynced with flush=always, because the previous append returned
//! only after its fsync), the epoch of the last batch, and the leader epoch
//! followed. The answer per partition is new batches and the leader's HW, or a
//! diverging epoch (truncate, then fetch again), or an error: the partition
//! sits out until the metadata image moves it on.
//!
//! ```text
//!   FetchHost ──followers_of(source)──▶ round_request ──ReplicaFetch──▶ leader
//!        ▲                                                               │
//!        │ apply_fetched (blocking, one task per partition)             │
//!        └──────────────── interpret(answer) ◀───────────────────────────┘
//!                          Backoff after a round that applied nothing
//! ```
//!
//! The decisions are pure ([`round_request`], [`interpret`], [`Backoff`]) and
//! unit-tested without tokio; [`run_fetcher`] drives them. The fetcher sees
//! the broker only through [`FetchHost`], which the replica manager
//! implements.

use std::sync::Arc;
use std::time::Duration;

use rivulet_proto::node_auth::{node_channel, NodeChannel, NodeCredentials};
use rivulet_proto::v1::replication_client::ReplicationClient;
use rivulet_proto::v1::{
    ErrorCode, ReplicaFetchPartition, ReplicaFetchPartitionResponse, ReplicaFetchRequest,
    ReplicaFetchResponse,
};
use rivulet_proto::NODE_CONNECT_TIMEOUT;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::partition::{FetchedData, Partition};

use rivulet_common::limits::MAX_MESSAGE_BYTES;
/// How long a fetcher with nothing to fetch (or no session yet) waits
/// before looking again.
const IDLE: Duration = Duration::from_millis(50);
/// How long it waits after an unusable leader address.
const BAD_ADDRESS_WAIT: Duration = Duration::from_millis(500);
/// How much longer than the long poll a fetch may take before it is
/// abandoned: a fetch on a connection the network black-holed is dropped
/// (and the connection re-made) soon after the network heals, instead of
/// stalling the ISR for longer.
const FETCH_GRACE: Duration = Duration::from_secs(2);
/// The first backoff after a failed round, doubled per failure up to
/// [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(20);
/// The longest backoff.
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// How a fetcher fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FetchSettings {
    /// The long poll, in ms.
    pub wait_ms: u32,
    /// Bytes per partition per round.
    pub partition_max_bytes: u32,
}

/// What a fetcher needs from the broker it runs in.
pub(crate) trait FetchHost: Send + Sync + 'static {
    /// This broker's id.
    fn replica_id(&self) -> u64;
    /// This broker's epoch and the address of `source`, once both are known.
    fn session(&self, source: u64) -> Option<(u64, String)>;
    /// The replicas following `source`, with the leader epoch they follow.
    fn followers_of(&self, source: u64) -> Vec<(Arc<Partition>, u32)>;
    /// Bumped whenever replicas change roles.
    fn roles_changed(&self) -> watch::Receiver<u64>;
    /// How to fetch.
    fn fetch_settings(&self) -> FetchSettings;
    /// Signs the fetches (they are node-only calls).
    fn credentials(&self) -> NodeCredentials;
}

/// One followed partition as the next round asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Followed {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The leader epoch followed.
    pub leader_epoch: u32,
    /// Our log end: we hold every offset below it.
    pub log_end: u64,
    /// The epoch of our last batch (`None` for an empty log).
    pub last_epoch: Option<u32>,
    /// Our log cannot be written.
    pub storage_failed: bool,
}

impl Followed {
    fn of(p: &Partition, leader_epoch: u32) -> Self {
        Self {
            topic: p.topic.clone(),
            partition: p.partition,
            leader_epoch,
            log_end: p.offsets().log_end_offset,
            last_epoch: p.log.latest_epoch(),
            storage_failed: p.storage_failed(),
        }
    }
}

/// The `ReplicaFetch` of one round.
pub(crate) fn round_request(
    replica_id: u64,
    broker_epoch: u64,
    settings: FetchSettings,
    parts: &[Followed],
) -> ReplicaFetchRequest {
    ReplicaFetchRequest {
        replica_id,
        broker_epoch,
        max_wait_ms: settings.wait_ms,
        min_bytes: 1,
        max_bytes: settings.partition_max_bytes.saturating_mul(4),
        partitions: parts
            .iter()
            .map(|f| ReplicaFetchPartition {
                topic: f.topic.clone(),
                partition: f.partition,
                current_leader_epoch: f.leader_epoch,
                fetch_offset: f.log_end,
                last_fetched_epoch: f.last_epoch,
                partition_max_bytes: settings.partition_max_bytes,
                storage_failed: f.storage_failed,
            })
            .collect(),
    }
}

/// What one partition's answer tells the follower to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Append the batches (possibly none) and take the leader's HW.
    Records,
    /// Our log diverged: truncate to `end_offset`, then fetch again.
    Diverging { end_offset: u64 },
    /// Our fetch offset is outside the leader's log: start over at its start.
    OutOfRange { leader_log_start: u64 },
    /// The leader refused (not leader, fenced epoch, ...): sit out until the
    /// image moves the partition on.
    Refused,
}

/// How to act on one partition's answer.
pub(crate) fn interpret(r: &ReplicaFetchPartitionResponse) -> Answer {
    match ErrorCode::try_from(r.error_code) {
        Ok(ErrorCode::OffsetOutOfRange) => Answer::OutOfRange {
            leader_log_start: r.log_start_offset,
        },
        Ok(ErrorCode::None) => match &r.diverging_epoch {
            Some(d) => Answer::Diverging {
                end_offset: d.end_offset,
            },
            None => Answer::Records,
        },
        _ => Answer::Refused,
    }
}

/// The data to hand the partition for an answer it may apply.
fn fetched_data(answer: Answer, r: &ReplicaFetchPartitionResponse) -> Option<FetchedData<'_>> {
    match answer {
        Answer::Records => Some(FetchedData::Records {
            records: &r.records,
            high_watermark: r.high_watermark,
            log_start_offset: r.log_start_offset,
        }),
        Answer::Diverging { end_offset } => Some(FetchedData::Diverging { end_offset }),
        Answer::OutOfRange { leader_log_start } => {
            Some(FetchedData::OutOfRange { leader_log_start })
        }
        Answer::Refused => None,
    }
}

/// Backoff between failed rounds: [`BACKOFF_MIN`] doubling up to
/// [`BACKOFF_MAX`]; a round that applied something resets it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// A round succeeded.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// A round failed: how long to wait before the next.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ms = (BACKOFF_MIN.as_millis() as u64) << self.failures.min(5);
        Duration::from_millis(ms).min(BACKOFF_MAX)
    }

    /// After a round that got an answer for `asked` partitions and applied
    /// `applied`: the wait before the next one, if any. Nothing usable came
    /// back when the leader refuses us, or our disk fails.
    pub fn after_round(&mut self, asked: usize, applied: usize) -> Option<Duration> {
        (asked > 0 && applied == 0).then(|| self.fail())
    }
}

/// Fetches from broker `source` until `cancel`.
pub(crate) async fn run_fetcher(host: Arc<dyn FetchHost>, source: u64, cancel: CancellationToken) {
    let mut client: Option<(String, ReplicationClient<NodeChannel>)> = None;
    let mut backoff = Backoff::default();
    let mut roles = host.roles_changed();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        roles.borrow_and_update();
        let parts = host.followers_of(source);
        let Some((broker_epoch, address)) = host.session(source) else {
            sleep(&cancel, IDLE).await;
            continue;
        };
        if parts.is_empty() {
            sleep(&cancel, IDLE).await;
            continue;
        }
        let c = match &client {
            Some((addr, c)) if *addr == address => c.clone(),
            _ => match node_channel(&address, NODE_CONNECT_TIMEOUT, &host.credentials()) {
                Ok(ch) => {
                    let c = ReplicationClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES);
                    client = Some((address, c.clone()));
                    c
                }
                Err(e) => {
                    warn!(source, %address, error = %e, "bad leader address");
                    sleep(&cancel, BAD_ADDRESS_WAIT).await;
                    continue;
                }
            },
        };
        let followed: Vec<Followed> = parts.iter().map(|(p, e)| Followed::of(p, *e)).collect();
        let settings = host.fetch_settings();
        let request = round_request(host.replica_id(), broker_epoch, settings, &followed);
        let response = match fetch(&*host, source, c, request, settings, &mut roles, &cancel).await
        {
            Round::Cancelled => return,
            Round::RolesChanged => continue,
            Round::TimedOut => {
                backoff.fail();
                debug!(source, "replica fetch timed out");
                continue;
            }
            Round::Failed(status) => {
                debug!(source, error = %status.message(), "replica fetch failed");
                sleep(&cancel, backoff.fail()).await;
                continue;
            }
            Round::Answered(r) => {
                backoff.reset();
                r
            }
        };
        let asked = response.partitions.len();
        let applied = apply_response(source, &parts, response).await;
        if let Some(wait) = backoff.after_round(asked, applied) {
            sleep(&cancel, wait).await;
        }
    }
}

/// How one fetch round ended.
enum Round {
    Cancelled,
    /// The set of followed partitions changed while the long poll waited.
    RolesChanged,
    TimedOut,
    Failed(tonic::Status),
    Answered(ReplicaFetchResponse),
}

/// Sends one fetch and waits for its answer. A partition that starts
/// following this leader (a failover) must not wait for the long poll in
/// flight to end: the round restarts when the followed set changes.
async fn fetch(
    host: &dyn FetchHost,
    source: u64,
    mut client: ReplicationClient<NodeChannel>,
    request: ReplicaFetchRequest,
    settings: FetchSettings,
    roles: &mut watch::Receiver<u64>,
    cancel: &CancellationToken,
) -> Round {
    let fetching = followed_keys(&request);
    let deadline = Duration::from_millis(u64::from(settings.wait_ms)) + FETCH_GRACE;
    let call = tokio::time::timeout(deadline, client.replica_fetch(request));
    tokio::pin!(call);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Round::Cancelled,
            r = &mut call => return match r {
                Ok(Ok(r)) => Round::Answered(r.into_inner()),
                Ok(Err(status)) => Round::Failed(status),
                Err(_) => Round::TimedOut,
            },
            changed = roles.changed() => {
                if changed.is_err() {
                    return Round::Cancelled;
                }
                let now: Vec<(String, u32, u32)> = host
                    .followers_of(source)
                    .iter()
                    .map(|(p, e)| (p.topic.clone(), p.partition, *e))
                    .collect();
                if now != fetching {
                    return Round::RolesChanged;
                }
            }
        }
    }
}

/// The (topic, partition, leader epoch) a request asks for.
fn followed_keys(request: &ReplicaFetchRequest) -> Vec<(String, u32, u32)> {
    request
        .partitions
        .iter()
        .map(|p| (p.topic.clone(), p.partition, p.current_leader_epoch))
        .collect()
}

/// Applies an answer off the async threads (appends fsync), one blocking
/// task per partition so their fsyncs overlap. Returns how many partitions
/// applied their answer.
async fn apply_response(
    source: u64,
    parts: &[(Arc<Partition>, u32)],
    response: ReplicaFetchResponse,
) -> usize {
    let mut applies = tokio::task::JoinSet::new();
    for r in response.partitions {
        let Some((part, epoch)) = parts
            .iter()
            .find(|(p, _)| p.topic == r.topic && p.partition == r.partition)
            .map(|(p, e)| (Arc::clone(p), *e))
        else {
            continue;
        };
        let answer = interpret(&r);
        if answer == Answer::Refused {
            debug!(topic = %r.topic, partition = r.partition, code = r.error_code,
                reason = %r.error_message, "leader refused the fetch");
            continue;
        }
        applies.spawn_blocking(move || {
            let Some(data) = fetched_data(answer, &r) else {
                return false;
            };
            apply_one(&part, source, epoch, data)
        });
    }
    let mut applied = 0;
    while let Some(done) = applies.join_next().await {
        match done {
            Ok(ok) => applied += usize::from(ok),
            // Surfaced, not dropped: the partition sits this round out.
            Err(e) if e.is_panic() => {
                tracing::error!(source, error = %e, "applying fetched data panicked");
            }
            Err(_) => {}
        }
    }
    applied
}

/// Applies one partition's answer (blocking); whether it did.
fn apply_one(part: &Partition, source: u64, epoch: u32, data: FetchedData<'_>) -> bool {
    let storage_failed_before = part.storage_failed();
    match part.apply_fetched(source, epoch, data) {
        Ok(progress) => {
            if storage_failed_before {
                info!(topic = %part.topic, partition = part.partition, "the log is writable again");
            }
            if progress.truncated {
                info!(topic = %part.topic, partition = part.partition,
                    log_end = part.offsets().log_end_offset,
                    "truncated a diverged log tail to match the leader");
            }
            true
        }
        Err(e) => {
            // A storage failure is reported to the leader (which takes us
            // out of the ISR) and logged once.
            if !part.storage_failed() || !storage_failed_before {
                warn!(topic = %part.topic, partition = part.partition, error = %e,
                    "cannot apply fetched data");
            }
            false
        }
    }
}

async fn sleep(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

#[cfg(test)]
mod tests {
    use rivulet_proto::v1::DivergingEpoch;

    use super::*;

    fn answer(code: ErrorCode, diverging: Option<u64>) -> ReplicaFetchPartitionResponse {
        ReplicaFetchPartitionResponse {
            topic: "t".into(),
            partition: 0,
            error_code: code as i32,
            log_start_offset: 7,
            high_watermark: 9,
            diverging_epoch: diverging.map(|end_offset| DivergingEpoch {
                epoch: 1,
                end_offset,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn answers_are_interpreted_as_kafka_followers_do() {
        assert_eq!(interpret(&answer(ErrorCode::None, None)), Answer::Records);
        assert_eq!(
            interpret(&answer(ErrorCode::None, Some(42))),
            Answer::Diverging { end_offset: 42 }
        );
        assert_eq!(
            interpret(&answer(ErrorCode::OffsetOutOfRange, None)),
            Answer::OutOfRange {
                leader_log_start: 7
            }
        );
        for refused in [
            ErrorCode::NotLeaderOrFollower,
            ErrorCode::FencedLeaderEpoch,
            ErrorCode::StaleBrokerEpoch,
            ErrorCode::UnknownTopicOrPartition,
        ] {
            assert_eq!(
                interpret(&answer(refused, None)),
                Answer::Refused,
                "{refused:?}"
            );
        }
        // A code from a newer leader this follower does not know: refused.
        let mut unknown = answer(ErrorCode::None, None);
        unknown.error_code = 9_999;
        assert_eq!(interpret(&unknown), Answer::Refused);
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_on_success() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.fail().as_millis() as u64).collect();
        assert_eq!(waits, [40, 80, 160, 320, 500, 500, 500, 500]);
        b.reset();
        assert_eq!(b.fail(), Duration::from_millis(40));
        b.reset();
        assert_eq!(
            b.after_round(3, 1),
            None,
            "something applied: go on at once"
        );
        assert_eq!(
            b.after_round(0, 0),
            None,
            "an empty answer is not a failure"
        );
        assert_eq!(b.after_round(2, 0), Some(Duration::from_millis(40)));
        assert_eq!(b.after_round(2, 0), Some(Duration::from_millis(80)));
    }

    #[test]
    fn a_round_asks_from_each_log_end_under_the_followed_epoch() {
        let settings = FetchSettings {
            wait_ms: 500,
            partition_max_bytes: 1 << 20,
        };
        let parts = [
            Followed {
                topic: "a".into(),
                partition: 0,
                leader_epoch: 3,
                log_end: 100,
                last_epoch: Some(2),
                storage_failed: false,
            },
            Followed {
                topic: "b".into(),
                partition: 5,
                leader_epoch: 1,
                log_end: 0,
                last_epoch: None,
                storage_failed: true,
            },
        ];
        let r = round_request(2, 17, settings, &parts);
        assert_eq!((r.replica_id, r.broker_epoch, r.max_wait_ms), (2, 17, 500));
        assert_eq!(r.max_bytes, 4 << 20);
        assert_eq!(
            followed_keys(&r),
            [("a".to_owned(), 0, 3), ("b".to_owned(), 5, 1)]
        );
        assert_eq!(r.partitions[0].fetch_offset, 100);
        assert_eq!(r.partitions[0].last_fetched_epoch, Some(2));
        assert_eq!(r.partitions[1].last_fetched_epoch, None);
        assert!(r.partitions[1].storage_failed);
        // A huge per-partition limit does not overflow the request's.
        let big = FetchSettings {
            partition_max_bytes: u32::MAX,
            ..settings
        };
        assert_eq!(round_request(2, 17, big, &parts).max_bytes, u32::MAX);
    }
}
