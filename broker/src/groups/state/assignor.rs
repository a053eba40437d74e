//! The target assignment: uniform and sticky, topic by topic, computed
//! once per group epoch and topic sizes.

use std::collections::{BTreeMap, BTreeSet};

use super::{Group, Member, Tp};

impl Group {
    /// The uniform, sticky target assignment for the current epoch and
    /// topic sizes (cached until either changes).
    pub(super) fn target(
        &mut self,
        counts: &BTreeMap<String, u32>,
    ) -> &BTreeMap<String, BTreeSet<Tp>> {
        let key = (self.epoch, counts.clone());
        if self.target_for.as_ref() != Some(&key) {
            let previous = if self.target_for.is_some() {
                self.target.clone()
            } else {
                BTreeMap::new()
            };
            self.target = assign(&self.members, counts, &previous);
            self.target_for = Some(key);
        }
        &self.target
    }
}

/// Uniform sticky assignment, topic by topic: each subscriber of a topic gets
/// ⌊n/k⌋ or ⌈n/k⌉ of its n partitions, keeping what it had (in the previous
/// target, else what it holds) up to its quota.
pub fn assign(
    members: &BTreeMap<String, Member>,
    counts: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, BTreeSet<Tp>>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out: BTreeMap<String, BTreeSet<Tp>> = members
        .keys()
        .map(|id| (id.clone(), BTreeSet::new()))
        .collect();
    for (topic, &n) in counts {
        let subs: Vec<&String> = members
            .iter()
            .filter(|(_, m)| m.value.subscribed.contains(topic))
            .map(|(id, _)| id)
            .collect();
        if subs.is_empty() || n == 0 {
            continue;
        }
        // What each subscriber had of this topic.
        let mut taken = BTreeSet::new();
        let mut had: BTreeMap<&String, Vec<u32>> = BTreeMap::new();
        for id in &subs {
            let source = previous.get(*id).unwrap_or(&members[*id].value.assigned);
            let mut ps: Vec<u32> = source
                .iter()
                .filter(|(t, p)| t == topic && *p < n)
                .map(|(_, p)| *p)
                .filter(|p| taken.insert(*p))
                .collect();
            ps.sort_unstable();
            had.insert(id, ps);
        }
        let k = subs.len() as u32;
        let (base, extra) = (n / k, n % k);
        // The ⌈n/k⌉ quotas go to those holding the most (least movement).
        let mut order = subs.clone();
        order.sort_by_key(|id| (std::cmp::Reverse(had[*id].len()), (*id).clone()));
        let quota: BTreeMap<&String, usize> = order
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, (base + u32::from((i as u32) < extra)) as usize))
            .collect();
        let mut free: BTreeSet<u32> = (0..n).collect();
        let mut got: BTreeMap<&String, Vec<u32>> = BTreeMap::new();
        for id in &subs {
            let keep: Vec<u32> = had[*id].iter().take(quota[*id]).copied().collect();
            for p in &keep {
                free.remove(p);
            }
            got.insert(id, keep);
        }
        for p in free {
            let Some(id) = order
                .iter()
                .filter(|id| got[**id].len() < quota[**id])
                .min_by_key(|id| (got[**id].len(), (**id).clone()))
            else {
                break;
            };
            if let Some(v) = got.get_mut(*id) {
                v.push(p);
            }
        }
        for (id, ps) in got {
            let set = out.entry(id.clone()).or_default();
            set.extend(ps.into_iter().map(|p| (topic.clone(), p)));
        }
    }
    out
}
