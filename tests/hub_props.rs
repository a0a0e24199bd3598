//! Property test: random interleavings of adds, subscribes, resumes, drops, closes and the
//! passing of time. Every subscriber must see a gap-free, duplicate-free sequence, or explicit
//! gaps covering exactly what it missed, and only what it could not have.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use proptest::prelude::*;
use status_messenger::hub::HistoryExpiry;
use status_messenger::{Event, Hub, HubConfig, Subscription};

const SESSIONS: usize = 3;
const TTL_MS: u64 = 100_000;

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Subscribe(usize, Option<u64>),
    Poll(usize, usize),
    Drop(usize),
    Resume(usize),
    Close(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..SESSIONS).prop_map(Op::Add),
        2 => (0..SESSIONS, proptest::option::of(0..30u64)).prop_map(|(s, a)| Op::Subscribe(s, a)),
        6 => (any::<usize>(), 1..12usize).prop_map(|(i, n)| Op::Poll(i, n)),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Resume),
        1 => (0..SESSIONS).prop_map(Op::Close),
        1 => (1..80u64).prop_map(Op::Advance),
    ]
}

/// One life of a session, from its first use to its close or eviction.
#[derive(Debug)]
struct Life {
    /// `(text, added at ms)`; status `seq` is at index `seq - 1`.
    statuses: Vec<(String, u64)>,
    subscribers: usize,
    last_activity: u64,
    /// Set when it ended: what history held then (`None` while it lives).
    frozen: Option<Vec<u64>>,
}

struct Model {
    capacity: usize,
    buffer: u64,
    expiry: HistoryExpiry,
    now: u64,
    lives: Vec<Life>,
    current: [Option<usize>; SESSIONS],
    texts: u64,
}

impl Model {
    fn head(&self, life: usize) -> u64 {
        self.lives[life].statuses.len() as u64
    }

    /// The numbers the hub's rules say history holds now (the hub may hold more until it trims).
    fn retained(&self, life: usize) -> Vec<u64> {
        let l = &self.lives[life];
        if let Some(frozen) = &l.frozen {
            return frozen.clone();
        }
        let head = l.statuses.len();
        let first = head.saturating_sub(self.capacity);
        // Under AfterLastStatus, a quiet spell of TTL_MS after a status clears it for good.
        let quiet_after = |i: usize| {
            let next = l.statuses.get(i + 1).map_or(self.now, |s| s.1);
            next - l.statuses[i].1
        };
        (first..head)
            .filter(|&i| match self.expiry {
                HistoryExpiry::EachStatus => self.now - l.statuses[i].1 < TTL_MS,
                _ => (i..head).all(|j| quiet_after(j) < TTL_MS),
            })
            .map(|i| i as u64 + 1)
            .collect()
    }

    fn idle_expired(&self, life: usize) -> bool {
        let l = &self.lives[life];
        l.subscribers == 0 && self.now - l.last_activity >= TTL_MS
    }

    fn end(&mut self, session: usize) {
        if let Some(life) = self.current[session].take() {
            let frozen = if self.lives[life].subscribers == 0 {
                Vec::new()
            } else {
                self.retained(life)
            };
            self.lives[life].frozen = Some(frozen);
        }
    }

    /// What the hub does on opening, publishing or subscribing: evict if idle past the TTL,
    /// open a new life if there is none, mark it active.
    fn touch(&mut self, session: usize) -> usize {
        if let Some(life) = self.current[session] {
            if self.idle_expired(life) {
                self.end(session);
            }
        }
        let life = match self.current[session] {
            Some(life) => life,
            None => {
                self.lives.push(Life {
                    statuses: Vec::new(),
                    subscribers: 0,
                    last_activity: self.now,
                    frozen: None,
                });
                self.current[session] = Some(self.lives.len() - 1);
                self.lives.len() - 1
            }
        };
        self.lives[life].last_activity = self.now;
        life
    }
}

struct Sub {
    stream: Subscription,
    session: usize,
    life: usize,
    cursor: u64,
    ended: bool,
    /// Head of its session when the subscription last read from history.
    read_head: u64,
}

#[derive(Default)]
struct Seen {
    statuses: u64,
    gaps: u64,
    lagged: u64,
}

/// Polls `sub` up to `max` times, checking every item against the model.
fn poll(model: &Model, sub: &mut Sub, max: usize, seen: &mut Seen) -> Result<(), TestCaseError> {
    for _ in 0..max {
        if sub.ended {
            return Ok(());
        }
        let head = model.head(sub.life);
        let ended_life = model.lives[sub.life].frozen.is_some();
        if sub.stream.queued() == 0 {
            // This poll reads from history now.
            sub.read_head = head;
        }
        match sub.stream.next().now_or_never() {
            None => {
                prop_assert!(!ended_life, "a closed session's subscriber waits forever");
                prop_assert!(
                    sub.cursor >= head,
                    "waits at {} below head {head}",
                    sub.cursor
                );
                return Ok(());
            }
            Some(None) => {
                prop_assert!(ended_life, "stream ended while its session lives");
                prop_assert!(
                    sub.cursor >= head,
                    "ended at {} below head {head}",
                    sub.cursor
                );
                sub.ended = true;
                return Ok(());
            }
            Some(Some(Event::Status(status))) => {
                prop_assert_eq!(status.session().as_str(), format!("s{}", sub.session));
                prop_assert_eq!(status.seq(), sub.cursor + 1, "duplicate or silent loss");
                prop_assert!(
                    status.seq() + model.buffer > sub.read_head,
                    "{} is more than the subscriber buffer behind {}",
                    status.seq(),
                    sub.read_head
                );
                let (text, _) = &model.lives[sub.life].statuses[status.seq() as usize - 1];
                prop_assert_eq!(status.text(), text.as_str());
                sub.cursor = status.seq();
                seen.statuses += 1;
            }
            Some(Some(Event::Gap(gap))) => {
                prop_assert_eq!(
                    gap.from(),
                    sub.cursor + 1,
                    "gap does not start where it left"
                );
                prop_assert!(
                    gap.from() <= gap.to() && gap.to() <= head,
                    "bad gap {:?}",
                    gap
                );
                // Each missing status was out of history, or beyond the subscriber buffer.
                let retained = model.retained(sub.life);
                let floor = head.saturating_sub(model.buffer);
                for seq in gap.from()..=gap.to() {
                    prop_assert!(
                        seq <= floor || !retained.contains(&seq),
                        "gap {:?} covers {seq}, which it could have had",
                        gap
                    );
                }
                sub.cursor = gap.to();
                seen.gaps += 1;
                seen.lagged += gap.len();
            }
            Some(Some(other)) => prop_assert!(false, "unexpected event {:?}", other),
        }
    }
    Ok(())
}

fn run(
    capacity: usize,
    buffer: usize,
    expiry: HistoryExpiry,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut config = HubConfig::default();
        config.history_capacity = capacity;
        config.subscriber_buffer = buffer;
        config.history_expiry = expiry;
        config.history_ttl = Duration::from_millis(TTL_MS);
        let hub = Hub::new(config).unwrap();
        let mut model = Model {
            capacity,
            buffer: buffer as u64,
            expiry,
            now: 0,
            lives: Vec::new(),
            current: [None; SESSIONS],
            texts: 0,
        };
        let mut subs: Vec<Sub> = Vec::new();
        let mut seen = Seen::default();
        let mut accepted = 0;

        let subscribe = |hub: &Hub, model: &mut Model, session: usize, after: Option<u64>| {
            let life = model.touch(session);
            model.lives[life].subscribers += 1;
            Sub {
                stream: hub.subscribe(&format!("s{session}"), after),
                session,
                life,
                cursor: after.unwrap_or(0),
                ended: false,
                read_head: 0,
            }
        };
        let leave = |model: &mut Model, sub: Sub| {
            let life = &mut model.lives[sub.life];
            life.subscribers -= 1;
            life.last_activity = model.now;
            drop(sub.stream);
        };

        for op in ops {
            match op {
                Op::Add(session) => {
                    let life = model.touch(session);
                    model.texts += 1;
                    let text = format!("text {}", model.texts);
                    model.lives[life].statuses.push((text.clone(), model.now));
                    let seq = hub
                        .publish(Some(&format!("s{session}")), text)
                        .ok()
                        .and_then(|p| p.seq());
                    prop_assert_eq!(seq, Some(model.head(life)));
                    accepted += 1;
                }
                Op::Subscribe(session, after) => {
                    let sub = subscribe(&hub, &mut model, session, after);
                    subs.push(sub);
                }
                Op::Poll(i, n) if !subs.is_empty() => {
                    let i = i % subs.len();
                    poll(&model, &mut subs[i], n, &mut seen)?;
                }
                Op::Drop(i) if !subs.is_empty() => {
                    let sub = subs.swap_remove(i % subs.len());
                    leave(&mut model, sub);
                }
                Op::Resume(i) if !subs.is_empty() => {
                    // A page reload: leave, and come back after the last number seen.
                    let sub = subs.swap_remove(i % subs.len());
                    let (session, cursor) = (sub.session, sub.cursor);
                    leave(&mut model, sub);
                    let sub = subscribe(&hub, &mut model, session, Some(cursor));
                    subs.push(sub);
                }
                Op::Close(session) => {
                    let existed = hub.close_session(&format!("s{session}")).await.unwrap();
                    match model.current[session] {
                        // Whether a sweep got to an idle session first is the hub's business.
                        Some(life) if model.idle_expired(life) => {}
                        Some(_) => prop_assert!(existed),
                        None => prop_assert!(!existed),
                    }
                    model.end(session);
                }
                Op::Advance(secs) => {
                    tokio::time::advance(Duration::from_secs(secs)).await;
                    model.now += secs * 1000;
                }
                Op::Poll(..) | Op::Drop(_) | Op::Resume(_) => {}
            }
        }

        // Drain every subscriber: each must reach the head of its session's life.
        for sub in &mut subs {
            poll(&model, sub, usize::MAX, &mut seen)?;
            prop_assert!(sub.cursor >= model.head(sub.life));
        }
        for sub in subs.drain(..) {
            leave(&mut model, sub);
        }

        let stats = hub.stats();
        prop_assert_eq!(stats.accepted, accepted);
        prop_assert_eq!(stats.delivered, seen.statuses);
        prop_assert_eq!(stats.gaps, seen.gaps);
        prop_assert_eq!(stats.lagged, seen.lagged);
        prop_assert_eq!(stats.subscribers, 0);

        // After a sweep, history holds exactly what the rules say.
        hub.evict_idle();
        let mut sessions = 0;
        let mut retained = 0;
        let lives: HashMap<usize, usize> = model
            .current
            .iter()
            .enumerate()
            .filter_map(|(s, life)| life.map(|life| (s, life)))
            .collect();
        for life in lives.values() {
            if !model.idle_expired(*life) {
                sessions += 1;
                retained += model.retained(*life).len() as u64;
            }
        }
        let stats = hub.stats();
        prop_assert_eq!(stats.sessions, sessions);
        prop_assert_eq!(stats.retained, retained);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_subscriber_sees_each_status_once_or_an_exact_gap(
        capacity in 1..8usize,
        buffer in 1..10usize,
        each_status in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let expiry = if each_status { HistoryExpiry::EachStatus } else { HistoryExpiry::AfterLastStatus };
        run(capacity, buffer, expiry, ops)?;
    }
}
