//! The classic protocol's rebalance of one shard (Kafka's `prepareRebalance`, `onCompleteJoin`,
//! `removeMemberAndUpdateGroup`) and the per-group timers that drive it: KIP-394 pending member ids, session
//! timeouts, the rebalance timeout with KIP-134's initial delay, and the sync timeout. Membership changes here
//! are in memory; only a join that leaves the group Empty writes a GroupMetadataValue.

use bytes::Bytes;

use super::membership::{fail_parked, join_success, sync_error};
use super::{Deliveries, Delivery, GroupCoordinatorShard, GroupError, Records};
use crate::group::{GroupState, InitialDelay};

impl GroupCoordinatorShard {
    pub(super) fn maybe_prepare_rebalance(
        &mut self,
        now_ms: i64,
        group_id: &str,
        deliveries: &mut Deliveries,
    ) {
        let can = self.groups.get(group_id).is_some_and(|g| {
            matches!(
                g.state,
                GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
            )
        });
        if can {
            self.prepare_rebalance(now_ms, group_id, deliveries);
        }
    }

    /// Kafka's `prepareRebalance`: parked syncs of the aborted generation get REBALANCE_IN_PROGRESS; a group
    /// that was Empty waits `group.initial.rebalance.delay.ms` (KIP-134), any other the rebalance timeout.
    pub(super) fn prepare_rebalance(
        &mut self,
        now_ms: i64,
        group_id: &str,
        deliveries: &mut Deliveries,
    ) {
        let initial_delay_ms = self.config.initial_rebalance_delay_ms;
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        if group.state == GroupState::CompletingRebalance {
            for m in &mut group.members {
                m.assignment = Bytes::new();
                if let Some(sv) = m.awaiting_sync.take() {
                    deliveries.push(Delivery::Sync {
                        group_id: group_id.to_string(),
                        member_id: m.member_id.clone(),
                        response: sync_error(sv, GroupError::RebalanceInProgress),
                    });
                }
            }
        }
        let rebalance_timeout_ms = group.rebalance_timeout_ms();
        if group.state == GroupState::Empty && initial_delay_ms > 0 {
            let delay = initial_delay_ms.min(rebalance_timeout_ms.max(0));
            group.initial_delay = Some(InitialDelay {
                delay_ms: delay,
                remaining_ms: (rebalance_timeout_ms - delay).max(0),
                new_member_added: false,
            });
            group.rebalance_deadline_ms = Some(now_ms + delay);
        } else {
            group.initial_delay = None;
            group.rebalance_deadline_ms = Some(now_ms + rebalance_timeout_ms);
        }
        group.pending_sync.clear();
        group.sync_deadline_ms = None;
        group.transition(GroupState::PreparingRebalance, now_ms);
    }

    pub(super) fn maybe_complete_join(
        &mut self,
        now_ms: i64,
        group_id: &str,
        records: &mut Records,
        deliveries: &mut Deliveries,
    ) {
        let ready = self.groups.get(group_id).is_some_and(|g| {
            g.state == GroupState::PreparingRebalance
                && g.initial_delay.is_none()
                && g.has_all_members_joined()
        });
        if ready {
            self.complete_join(now_ms, group_id, records, deliveries);
        }
    }

    /// Kafka's `onCompleteJoin`: dynamic members that did not rejoin are removed, the next generation starts
    /// and every waiting member gets its JoinGroup response (the leader with everyone's metadata).
    fn complete_join(
        &mut self,
        now_ms: i64,
        group_id: &str,
        records: &mut Records,
        deliveries: &mut Deliveries,
    ) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let gone: Vec<String> = group
            .members
            .iter()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            group.remove_member(&id);
        }
        group.rebalance_deadline_ms = None;
        group.initial_delay = None;
        group.generation += 1;
        if group.members.is_empty() {
            group.protocol_name = None;
            group.leader = None;
            group.transition(GroupState::Empty, now_ms);
            self.store_group(records, group_id);
            return;
        }
        group.protocol_name = group.select_protocol();
        // The leader must be a member that rejoined (Kafka's maybeElectNewJoinedLeader).
        let leader_joined = group
            .leader
            .as_deref()
            .and_then(|l| group.member(l))
            .is_some_and(|m| m.awaiting_join.is_some());
        if !leader_joined {
            group.leader = group
                .members
                .iter()
                .find(|m| m.awaiting_join.is_some())
                .map(|m| m.member_id.clone());
        }
        group.transition(GroupState::CompletingRebalance, now_ms);
        group.pending_sync = group.members.iter().map(|m| m.member_id.clone()).collect();
        group.sync_deadline_ms = Some(now_ms + group.rebalance_timeout_ms());
        let ids: Vec<(String, i16)> = group
            .members
            .iter()
            .filter_map(|m| m.awaiting_join.map(|v| (m.member_id.clone(), v)))
            .collect();
        for (id, v) in ids {
            let is_leader = group.is_leader(&id);
            let response = join_success(group, &id, v, is_leader);
            if let Some(m) = group.member_mut(&id) {
                m.awaiting_join = None;
                m.renew_session(now_ms);
            }
            deliveries.push(Delivery::Join {
                group_id: group_id.to_string(),
                member_id: id,
                response,
            });
        }
    }

    /// Kafka's `removeMemberAndUpdateGroup`: parked requests of the member fail with UNKNOWN_MEMBER_ID, and the
    /// group rebalances (or completes a join that only waited for this member).
    pub(super) fn remove_member_and_update_group(
        &mut self,
        now_ms: i64,
        group_id: &str,
        member_id: &str,
        records: &mut Records,
        deliveries: &mut Deliveries,
    ) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let Some(mut member) = group.remove_member(member_id) else {
            return;
        };
        fail_parked(
            group_id,
            &mut member,
            GroupError::UnknownMemberId,
            deliveries,
        );
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, group_id, deliveries);
                self.maybe_complete_join(now_ms, group_id, records, deliveries);
            }
            GroupState::PreparingRebalance => {
                self.maybe_complete_join(now_ms, group_id, records, deliveries)
            }
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Fires the timers of one group that are due at `now_ms`.
    pub(super) fn poll_group(
        &mut self,
        now_ms: i64,
        group_id: &str,
        records: &mut Records,
        deliveries: &mut Deliveries,
    ) {
        // KIP-394 member ids that never came back.
        if let Some(g) = self.groups.get_mut(group_id) {
            let expired: Vec<String> = g
                .pending_members
                .iter()
                .filter(|(_, d)| **d <= now_ms)
                .map(|(id, _)| id.clone())
                .collect();
            if !expired.is_empty() {
                for id in &expired {
                    g.pending_members.remove(id);
                }
                self.maybe_complete_join(now_ms, group_id, records, deliveries);
            }
        }
        // Session timeouts: members with a parked request are kept alive (Kafka's shouldKeepAlive).
        let expired: Vec<String> = match self.groups.get_mut(group_id) {
            Some(g) => {
                let mut out = Vec::new();
                for m in &mut g.members {
                    if m.heartbeat_deadline_ms <= now_ms {
                        if m.awaiting_join.is_some() || m.awaiting_sync.is_some() {
                            m.renew_session(now_ms);
                        } else {
                            out.push(m.member_id.clone());
                        }
                    }
                }
                out
            }
            None => return,
        };
        for id in expired {
            self.remove_member_and_update_group(now_ms, group_id, &id, records, deliveries);
        }
        // Rebalance timeout / initial delay.
        let due = self.groups.get(group_id).is_some_and(|g| {
            g.state == GroupState::PreparingRebalance
                && g.rebalance_deadline_ms.is_some_and(|d| d <= now_ms)
        });
        if due {
            let extend = self.groups.get_mut(group_id).and_then(|g| {
                let d = g.initial_delay.as_mut()?;
                if d.new_member_added && d.remaining_ms > 0 {
                    let step = d.delay_ms.min(d.remaining_ms);
                    d.remaining_ms -= step;
                    d.new_member_added = false;
                    g.rebalance_deadline_ms = Some(now_ms + step);
                    Some(())
                } else {
                    None
                }
            });
            if extend.is_none() {
                self.complete_join(now_ms, group_id, records, deliveries);
            }
        }
        // Sync timeout: members that never sent SyncGroup are removed and the group rebalances.
        let unsynced: Vec<String> = match self.groups.get_mut(group_id) {
            Some(g)
                if matches!(
                    g.state,
                    GroupState::CompletingRebalance | GroupState::Stable
                ) && g.sync_deadline_ms.is_some_and(|d| d <= now_ms) =>
            {
                g.sync_deadline_ms = None;
                std::mem::take(&mut g.pending_sync).into_iter().collect()
            }
            _ => Vec::new(),
        };
        for id in unsynced {
            self.remove_member_and_update_group(now_ms, group_id, &id, records, deliveries);
        }
    }
}
