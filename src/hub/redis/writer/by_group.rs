//! Running a batch's commands group by group: each group's commands in order on the shard
//! that owns it, the groups side by side.
//!
//! # Invariants
//!
//! - A command after a failed one in its group is not sent (it fails with the same transient
//!   error), so calls of one group are applied in the order they were made.
//! - Every command has an answer, in the order given: one that got none in time is a timeout.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use redis::{Cmd, RedisError, RedisResult, Value};

use super::transient;
use crate::hub::redis::wire::{self, Conn};

type GroupRun<'a> = Pin<Box<dyn Future<Output = Vec<(usize, RedisResult<Value>)>> + Send + 'a>>;

/// Runs the commands of each group in order, the groups side by side (each on the shard that
/// owns it), each command within `timeout`; the results in the order of `commands`. A command
/// after a failed one in its group is not sent: it fails with the same transient error.
pub(super) async fn run_by_group(
    conn: &Conn,
    commands: Vec<Cmd>,
    groups: &[u32],
    timeout: Duration,
) -> Vec<RedisResult<Value>> {
    let count = commands.len();
    let mut by_group: HashMap<u32, Vec<(usize, Cmd)>> = HashMap::new();
    for (index, (cmd, group)) in commands.into_iter().zip(groups).enumerate() {
        by_group.entry(*group).or_default().push((index, cmd));
    }
    let runs: Vec<GroupRun<'_>> = by_group
        .into_values()
        .map(|list| {
            let mut conn = conn.clone();
            Box::pin(async move {
                let mut out = Vec::with_capacity(list.len());
                let mut failed: Option<RedisError> = None;
                for (index, cmd) in list {
                    if let Some(error) = &failed {
                        out.push((index, Err(error.clone())));
                        continue;
                    }
                    let result: RedisResult<Value> =
                        wire::within(timeout, cmd.query_async(&mut conn)).await;
                    if let Err(error) = &result {
                        if transient(error) {
                            failed = Some(error.clone());
                        }
                    }
                    out.push((index, result));
                }
                out
            }) as GroupRun<'_>
        })
        .collect();
    let mut results: Vec<Option<RedisResult<Value>>> = (0..count).map(|_| None).collect();
    for (index, result) in join_all(runs).await.into_iter().flatten() {
        results[index] = Some(result);
    }
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err(wire::timed_out())))
        .collect()
}

/// Polls every future until all are done; their outputs in order.
async fn join_all<T>(futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut futures: Vec<_> = futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
