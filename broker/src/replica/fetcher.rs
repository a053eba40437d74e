//! A follower's fetcher: one task per source broker, batching every
//! partition this broker follows there into one long-polling `ReplicaFetch`.
//!
//! Each round sends, per partition, the log end (every offset below it is
//! here, and fsynced with flush=always, because the previous append returned
//! only after its fsync), the epoch of the last batch, and the leader epoch
//! followed. The answer per partition is new batches and the leader's HW, or a
//! diverging epoch (truncate, then fetch again), or an error: the partition
//! sits out until the metadata image moves it on.

use std::sync::Arc;
use std::time::Duration;

use rivulet_metadata::BrokerId;
use rivulet_proto::v1::replication_client::ReplicationClient;
use rivulet_proto::v1::{ErrorCode, ReplicaFetchPartition, ReplicaFetchRequest};
use rivulet_proto::{channel, NODE_CONNECT_TIMEOUT};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::manager::ReplicaManager;
use super::partition::FetchedData;

/// Largest gRPC message a fetcher accepts.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Fetches from broker `source` until `cancel`.
pub(crate) async fn run_fetcher(mgr: Arc<ReplicaManager>, source: u64, cancel: CancellationToken) {
    let mut client: Option<(String, ReplicationClient<tonic::transport::Channel>)> = None;
    let idle = Duration::from_millis(50);
    let mut failures = 0u32;
    let mut roles = mgr.roles_changed.subscribe();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        roles.borrow_and_update();
        let parts = mgr.followers_of(source);
        let image = mgr.image();
        let (Some(reg), Some(broker_epoch)) = (image.broker(BrokerId(source)), mgr.broker_epoch())
        else {
            sleep(&cancel, idle).await;
            continue;
        };
        if parts.is_empty() {
            sleep(&cancel, idle).await;
            continue;
        }
        let c = match &client {
            Some((addr, c)) if *addr == reg.address => c.clone(),
            _ => match channel(&reg.address, NODE_CONNECT_TIMEOUT) {
                Ok(ch) => {
                    let c = ReplicationClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES);
                    client = Some((reg.address.clone(), c.clone()));
                    c
                }
                Err(e) => {
                    warn!(source, address = %reg.address, error = %e, "bad leader address");
                    sleep(&cancel, Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let request = ReplicaFetchRequest {
            replica_id: mgr.broker_id(),
            broker_epoch,
            max_wait_ms: mgr.config.replica_fetch_wait_ms,
            min_bytes: 1,
            max_bytes: mgr.config.replica_fetch_max_bytes.saturating_mul(4),
            partitions: parts
                .iter()
                .map(|(p, epoch)| ReplicaFetchPartition {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    current_leader_epoch: *epoch,
                    fetch_offset: p.offsets().log_end_offset,
                    last_fetched_epoch: p.log.latest_epoch(),
                    partition_max_bytes: mgr.config.replica_fetch_max_bytes,
                    storage_failed: p.storage_failed(),
                })
                .collect(),
        };
        // The long poll plus 2 s: a fetch on a connection the network
        // black-holed is abandoned (and the connection re-made) soon after
        // the network heals, instead of stalling the ISR for 5 s more.
        let deadline = Duration::from_millis(u64::from(mgr.config.replica_fetch_wait_ms) + 2_000);
        let mut c = c;
        let fetching: Vec<(String, u32, u32)> = parts
            .iter()
            .map(|(p, e)| (p.topic.clone(), p.partition, *e))
            .collect();
        let call = tokio::time::timeout(deadline, c.replica_fetch(request));
        tokio::pin!(call);
        // A partition that starts following this leader (a failover) must not
        // wait for the long poll in flight to end: restart the round.
        let response = loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = &mut call => break Some(r),
                changed = roles.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now: Vec<(String, u32, u32)> = mgr
                        .followers_of(source)
                        .iter()
                        .map(|(p, e)| (p.topic.clone(), p.partition, *e))
                        .collect();
                    if now != fetching {
                        break None;
                    }
                }
            }
        };
        let Some(response) = response else {
            continue;
        };
        let response = match response {
            Ok(Ok(r)) => {
                failures = 0;
                r.into_inner()
            }
            Ok(Err(status)) => {
                failures += 1;
                debug!(source, error = %status.message(), "replica fetch failed");
                sleep(&cancel, backoff(failures)).await;
                continue;
            }
            Err(_) => {
                failures += 1;
                debug!(source, "replica fetch timed out");
                continue;
            }
        };
        // Apply off the async threads (appends fsync), one blocking task per
        // partition so their fsyncs overlap.
        let mut applies = tokio::task::JoinSet::new();
        let asked = response.partitions.len();
        for r in response.partitions {
            let Some((part, epoch)) = parts
                .iter()
                .find(|(p, _)| p.topic == r.topic && p.partition == r.partition)
                .map(|(p, e)| (Arc::clone(p), *e))
            else {
                continue;
            };
            let code = ErrorCode::try_from(r.error_code);
            if !matches!(code, Ok(ErrorCode::None | ErrorCode::OffsetOutOfRange)) {
                debug!(topic = %r.topic, partition = r.partition, ?code,
                    reason = %r.error_message, "leader refused the fetch");
                continue;
            }
            applies.spawn_blocking(move || {
                let data = match (code, &r.diverging_epoch) {
                    (Ok(ErrorCode::OffsetOutOfRange), _) => FetchedData::OutOfRange {
                        leader_log_start: r.log_start_offset,
                    },
                    (_, Some(d)) => FetchedData::Diverging {
                        end_offset: d.end_offset,
                    },
                    (_, None) => FetchedData::Records {
                        records: &r.records,
                        high_watermark: r.high_watermark,
                    },
                };
                let storage_failed_before = part.storage_failed();
                match part.apply_fetched(source, epoch, data) {
                    Ok(progress) => {
                        if storage_failed_before {
                            tracing::info!(topic = %part.topic, partition = part.partition,
                                "the log is writable again");
                        }
                        if progress.truncated {
                            tracing::info!(topic = %part.topic, partition = part.partition,
                                log_end = part.offsets().log_end_offset,
                                "truncated a diverged log tail to match the leader");
                        }
                        true
                    }
                    Err(e) => {
                        // A storage failure is reported to the leader (which
                        // takes us out of the ISR) and logged once.
                        if !part.storage_failed() || !storage_failed_before {
                            warn!(topic = %part.topic, partition = part.partition, error = %e,
                                "cannot apply fetched data");
                        }
                        false
                    }
                }
            });
        }
        let mut applied = 0;
        while let Some(done) = applies.join_next().await {
            applied += usize::from(done.unwrap_or(false));
        }
        // Nothing usable came back: the leader refuses us, or our disk fails.
        if asked > 0 && applied == 0 {
            failures += 1;
            sleep(&cancel, backoff(failures)).await;
        }
    }
}

/// 20 ms doubling up to 500 ms.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis((20u64 << failures.min(5)).min(500))
}

async fn sleep(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
