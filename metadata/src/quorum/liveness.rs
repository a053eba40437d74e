//! The active controller's duties: broker leases, fencing of brokers whose
//! lease expired, and preferred-leader rebalancing.
//!
//! Leases live only in the active controller's memory. When a node becomes
//! active (a new Raft term with itself as leader) it first grants every
//! registered broker a fresh lease, so an election never fences brokers that
//! were heartbeating the old leader. A heartbeat renews a lease; a broken
//! heartbeat stream (the broker process died, the kernel closed its socket)
//! shortens it to a grace period, which makes crash detection much faster
//! than the lease while a merely slow broker keeps its full lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Quorum;
use crate::controller::{elect_preferred_leaders, fence_broker};
use crate::ids::BrokerId;

/// Broker leases on the active controller.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    /// The Raft term these leases were granted in; 0 when not leading.
    term: u64,
    /// When each broker's lease runs out.
    expiry: HashMap<BrokerId, Instant>,
}

impl Leases {
    /// Extends `broker`'s lease to `until` (never shortens it).
    pub(crate) fn renew(&mut self, broker: BrokerId, until: Instant) {
        let e = self.expiry.entry(broker).or_insert(until);
        *e = (*e).max(until);
    }

    /// Cuts `broker`'s lease to end no later than `until`.
    pub(crate) fn shorten(&mut self, broker: BrokerId, until: Instant) {
        if let Some(e) = self.expiry.get_mut(&broker) {
            *e = (*e).min(until);
        }
    }
}

/// Runs the active controller's timers until `cancel`; idle on followers.
pub async fn run_controller_duties(quorum: Arc<Quorum>, cancel: CancellationToken) {
    let tick = Duration::from_millis(100);
    let lease = Duration::from_millis(quorum.config.timing.broker_lease_ms);
    let rebalance_every = quorum
        .config
        .timing
        .preferred_leader_check_ms
        .map(Duration::from_millis);
    let mut last_rebalance = Instant::now();
    // The last active controller this node saw other than itself: when this
    // node takes over, that one most likely died (that is why leadership
    // moved), so its broker gets a short lease instead of a full one.
    let mut previous_controller: Option<BrokerId> = None;
    let short_lease = Duration::from_millis(
        quorum.config.timing.broker_grace_ms + quorum.config.timing.broker_heartbeat_ms,
    );
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        let metrics = quorum.raft.metrics().borrow().clone();
        let now = Instant::now();
        let image = quorum.image();
        let expired: Vec<BrokerId> = {
            let mut leases = quorum.leases.lock().unwrap_or_else(|e| e.into_inner());
            if metrics.current_leader != Some(quorum.node_id()) {
                if let Some(l) = metrics.current_leader {
                    previous_controller = Some(BrokerId(l));
                }
                leases.term = 0;
                leases.expiry.clear();
                continue;
            }
            if leases.term != metrics.current_term {
                info!(
                    term = metrics.current_term,
                    brokers = image.brokers().len(),
                    "became active controller; granting every broker a fresh lease"
                );
                leases.term = metrics.current_term;
                leases.expiry = image
                    .brokers()
                    .keys()
                    .map(|id| (*id, now + lease))
                    .collect();
                // A live old controller hears of this term on its first
                // append and heartbeats within one interval.
                if let Some(prev) = previous_controller.take() {
                    leases.shorten(prev, now + short_lease);
                    if let Some(b) = image.broker(prev) {
                        probe_dead(Arc::clone(&quorum), prev, b.address.clone());
                    }
                }
                last_rebalance = now;
            }
            // Brokers catching up have leases too: one that dies before it
            // caught up must give up the ISR places its storage kept.
            image
                .brokers()
                .values()
                .filter(|b| !b.fenced || b.catching_up)
                .map(|b| b.id)
                .filter(|id| {
                    let e = leases.expiry.entry(*id).or_insert(now + lease);
                    *e <= now
                })
                .collect()
        };
        for id in expired {
            warn!(broker = id.0, "broker lease expired; fencing it");
            match quorum.propose(|img| fence_broker(img, id)).await {
                Ok(r) => {
                    if !r.offline.is_empty() {
                        warn!(
                            broker = id.0,
                            offline = r.offline.len(),
                            "partitions left without a live in-sync replica"
                        );
                    }
                }
                Err(e) => warn!(broker = id.0, error = %e, "fencing failed"),
            }
        }
        if let Some(every) = rebalance_every {
            if now.duration_since(last_rebalance) >= every {
                last_rebalance = now;
                match quorum.propose(|img| Ok(elect_preferred_leaders(img))).await {
                    Ok(r) if !r.elected.is_empty() => {
                        info!(
                            partitions = r.elected.len(),
                            "moved leadership back to preferred replicas"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "preferred-leader election failed"),
                }
            }
        }
    }
}

/// Ends `broker`'s lease at once if its port refuses connections: the
/// process is gone (a paused or unreachable one keeps its lease). Used when
/// its heartbeat stream breaks and for the previous controller.
pub(crate) fn probe_dead(quorum: Arc<Quorum>, broker: BrokerId, address: String) {
    tokio::spawn(async move {
        let probe = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(address.as_str()),
        )
        .await;
        if matches!(&probe, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused) {
            info!(broker = broker.0, %address, "broker's port refuses connections; ending its lease");
            quorum
                .leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .shorten(broker, Instant::now());
        }
    });
}
