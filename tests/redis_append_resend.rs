//! The append script against a real `redis-server`, called as the writer calls it when the
//! reply of a batch was lost and the batch is sent again: every task change it carries must
//! leave the task's state as the first sending did.
#![cfg(feature = "redis")]

mod common;

use common::{prefix, RedisServer};

const APPEND: &str = include_str!("../src/hub/redis/append.lua");

/// One append call: `parts` sessions' statuses (one status each) and then `tasks` changes,
/// as `Scripts::append_cmd` lays them out.
fn append(
    conn: &mut redis::Connection,
    prefix: &str,
    token: &str,
    check: bool,
    parts: &[(&str, u64)],
    tasks: &[(&str, &str, &str)],
) -> Vec<i64> {
    let log = |session: &str| format!("{prefix}:{{{session}}}:log");
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(APPEND).arg(parts.len() + 2 * tasks.len());
    for (session, _) in parts {
        cmd.arg(log(session));
    }
    for (session, _, _) in tasks {
        cmd.arg(format!("{prefix}:{{{session}}}:tasks"))
            .arg(log(session));
    }
    cmd.arg("PUBLISH")
        .arg(format!("{prefix}:ch"))
        .arg(100)
        .arg(60_000)
        .arg(format!("w:{token}"))
        .arg(if check { "1" } else { "0" })
        .arg(60_000)
        .arg(16)
        .arg(tasks.len());
    for (session, floor) in parts {
        let records = "+0 2\nhi";
        cmd.arg(*session)
            .arg(format!("{} {} ", session.len(), records.len()))
            .arg(*floor)
            .arg(1)
            .arg("1")
            .arg(0)
            .arg(records);
    }
    for (session, task, state) in tasks {
        cmd.arg(*session).arg(*task).arg(*state).arg("");
    }
    cmd.query(conn).expect("append script")
}

#[test]
fn a_batch_sent_again_does_not_take_a_task_back_to_running() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("resend");
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // The batch of [`running` of t, a status of s, `cancelling` of t]: the status goes into a
    // later call than the `running` before it, the `cancelling` with it.
    let first = append(
        &mut conn,
        &prefix,
        "1",
        false,
        &[],
        &[("s", "t", "running")],
    );
    assert_eq!(first, vec![1, 0]);
    let second = append(
        &mut conn,
        &prefix,
        "2",
        false,
        &[("s", 0)],
        &[("s", "t", "cancelling")],
    );
    assert_eq!(second, vec![1, 1, 0]);
    // Both ran, the reply was lost: the writer sends the batch again, with the check.
    append(&mut conn, &prefix, "1", true, &[], &[("s", "t", "running")]);
    let again = append(
        &mut conn,
        &prefix,
        "2",
        true,
        &[("s", 0)],
        &[("s", "t", "cancelling")],
    );
    // The second call is known by its token and skipped.
    assert_eq!(again[0], 0);
    let state: String = redis::cmd("HGET")
        .arg(format!("{prefix}:{{s}}:tasks"))
        .arg("t:t")
        .query(&mut conn)
        .unwrap();
    assert!(state.starts_with("cancelling "), "{state:?}");
}
