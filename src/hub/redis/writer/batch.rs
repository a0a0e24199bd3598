//! What the writer sends: a batch of script calls, one append call per group of sessions
//! (all of them on one Redis, a partition on a cluster) with one part per session, a close,
//! or a task's change; built from what the outbox hands over and encoded as the scripts'
//! commands.
//!
//! # Invariants
//!
//! - Within a group, calls keep the order of the items they came from: a close ends the
//!   group's open append call, so statuses queued after it go into a later call. A task's
//!   change goes into the group's open append call, which records it after its statuses (so
//!   after every status of its session queued before it), and its session's statuses queued
//!   after it go into a later call; other sessions' statuses go on into the open call, so a
//!   batch's task changes cost it no call more unless their own sessions publish again in it.
//! - Every call has its own token, taken in the order calls are made, so tokens increase per
//!   writer and per group.
//! - A part's numbers add up: each status carries the numbers skipped before it, and numbers
//!   skipped after the last status are its `trailing`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Cmd;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Writer;
use crate::hub::redis::outbox::{Item, TaskItem};
use crate::hub::redis::wire::{Append, Body, Scripts, TaskPart};

/// One session's statuses in an append call.
pub(super) struct Part {
    pub(super) session: Arc<str>,
    /// `(numbers skipped before it, status)` per status, in order.
    pub(super) items: Vec<(u64, Body)>,
    /// Numbers skipped after the last status.
    pub(super) trailing: u64,
    /// Numbers of statuses whose fate is unknown after Redis lost its data, reserved after the
    /// floor (see `Writer::reserve_pending`).
    pub(super) reserve: u64,
    /// The call renews the session's keys.
    pub(super) renew: bool,
}

pub(super) enum Call {
    Append {
        group: u32,
        parts: Vec<Part>,
        /// Task changes, recorded after the parts. They need no token: recording a state a
        /// task already has, or one it has moved past, changes nothing and tells nobody (see
        /// append.lua), so a call sent again after its reply was lost does not apply them
        /// twice, even after later calls of its batch had run.
        tasks: Vec<(Arc<str>, TaskItem)>,
        token: u64,
    },
    Close {
        group: u32,
        session: Arc<str>,
        token: u64,
        /// Hears whether the session existed; dropped unanswered when the close fails.
        reply: Option<oneshot::Sender<bool>>,
    },
}

impl Call {
    pub(super) fn statuses(&self) -> u64 {
        match self {
            Call::Append { parts, .. } => parts.iter().map(|p| p.items.len() as u64).sum(),
            Call::Close { .. } => 0,
        }
    }

    /// The task changes the call records.
    pub(super) fn task_changes(&self) -> u64 {
        match self {
            Call::Append { tasks, .. } => tasks.len() as u64,
            Call::Close { .. } => 0,
        }
    }

    pub(super) fn group(&self) -> u32 {
        match self {
            Call::Append { group, .. } | Call::Close { group, .. } => *group,
        }
    }

    pub(super) fn set_token(&mut self, new: u64) {
        match self {
            Call::Append { token, .. } | Call::Close { token, .. } => *token = new,
        }
    }
}

pub(super) struct Batch {
    /// Each call, and whether Redis confirmed it (or it was given up and counted).
    pub(super) calls: Vec<(Call, bool)>,
    /// It was sent before: calls not confirmed may have run.
    pub(super) sent: bool,
    /// When it was made: what a renewal it carries counts from.
    pub(super) made: Instant,
}

impl Writer {
    pub(super) fn token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// Whether a call made now renews `session`'s keys.
    fn renews(&self, session: &str) -> bool {
        let quarter = Duration::from_millis(self.shared.settings.ttl_ms / 4);
        self.known
            .get(session)
            .and_then(|known| known.renewed)
            .is_none_or(|at| at.elapsed() >= quarter)
    }

    /// Groups items into one append call per group, with one part per session (a group's call
    /// ends where one of its sessions is closed).
    pub(super) fn build(&mut self, items: Vec<Item>) -> Batch {
        let keys = self.shared.settings.keys.clone();
        let mut calls: Vec<(Call, bool)> = Vec::new();
        // The open append call of each group, and each session's part in it.
        let mut open: HashMap<u32, usize> = HashMap::new();
        let mut parts: HashMap<Arc<str>, (usize, usize)> = HashMap::new();
        // Per session with a task change in the batch, the call that records its last: its
        // statuses after it go into a later call.
        let mut after: HashMap<Arc<str>, usize> = HashMap::new();
        for item in items {
            let session = Arc::clone(item.session());
            let group = keys.group(&session);
            if let Item::Close { reply, .. } = item {
                open.remove(&group);
                let token = self.token();
                calls.push((
                    Call::Close {
                        group,
                        session,
                        token,
                        reply,
                    },
                    false,
                ));
                continue;
            }
            let is_task = matches!(item, Item::Task { .. });
            let open_call = open
                .get(&group)
                .copied()
                .filter(|&index| is_task || after.get(&session).is_none_or(|&at| index > at));
            let index = match open_call {
                Some(index) => index,
                None => {
                    let token = self.token();
                    calls.push((
                        Call::Append {
                            group,
                            parts: Vec::new(),
                            tasks: Vec::new(),
                            token,
                        },
                        false,
                    ));
                    open.insert(group, calls.len() - 1);
                    calls.len() - 1
                }
            };
            let Call::Append {
                parts: list, tasks, ..
            } = &mut calls[index].0
            else {
                continue;
            };
            if let Item::Task { change, .. } = item {
                tasks.push((Arc::clone(&session), change));
                after.insert(session, index);
                continue;
            }
            let part = match parts.get(&session) {
                Some(&(call, part)) if call == index => part,
                _ => {
                    list.push(Part {
                        session: Arc::clone(&session),
                        items: Vec::new(),
                        trailing: 0,
                        reserve: 0,
                        renew: self.renews(&session),
                    });
                    parts.insert(session, (index, list.len() - 1));
                    list.len() - 1
                }
            };
            let part = &mut list[part];
            match item {
                Item::Status { status, skip, .. } => {
                    part.items
                        .push((skip + std::mem::take(&mut part.trailing), status));
                }
                Item::Skip { count, .. } => part.trailing += count,
                Item::Close { .. } | Item::Task { .. } => {}
            }
        }
        Batch {
            calls,
            sent: false,
            made: Instant::now(),
        }
    }

    pub(super) fn command(&self, call: &Call, scripts: &Scripts, check: bool) -> Cmd {
        let settings = &self.shared.settings;
        match call {
            Call::Append {
                group,
                parts,
                tasks,
                token,
            } => {
                let appends: Vec<Append<'_>> = parts
                    .iter()
                    .map(|part| Append {
                        session: &part.session,
                        floor: self.known.get(&part.session).map_or(0, |k| k.seq),
                        items: &part.items,
                        trailing: part.trailing,
                        reserve: part.reserve,
                        renew: part.renew,
                    })
                    .collect();
                let tasks: Vec<TaskPart<'_>> = tasks
                    .iter()
                    .map(|(session, change)| TaskPart {
                        session,
                        task: &change.task,
                        state: change.state,
                        message: change.message.as_deref(),
                    })
                    .collect();
                scripts.append_cmd(
                    &settings.keys,
                    &settings.call(*group, &self.id, *token, check),
                    &appends,
                    &tasks,
                )
            }
            Call::Close { session, token, .. } => scripts.close_cmd(
                &settings.keys,
                settings.key_ttl_ms(),
                session,
                &self.id,
                *token,
            ),
        }
    }
}

impl Batch {
    pub(super) fn open_statuses(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(_, done)| !done)
            .map(|(call, _)| call.statuses())
            .sum()
    }
}
