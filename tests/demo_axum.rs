//! The axum demo server against the HTTP contract, in-process on a `127.0.0.1:0` listener.

#[path = "../examples/axum_demo.rs"]
#[allow(dead_code)]
mod axum_demo;
mod support;

use status_messenger::Hub;
use support::{Server, Shutdown};

fn start(hub: Hub) -> Server {
    Server::start(move |listener, shutdown: Shutdown| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum_demo::serve(listener, hub, shutdown).await
        })
    })
}

support::demo_cases!(start, axum_demo::common::hub_config);

/// The argument and environment parsing both servers share.
#[test]
fn arguments_and_environment() {
    use axum_demo::common::Config;
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let no_env = |_: &str| None;

    let config = Config::parse(args(&[]), no_env).expect("defaults");
    assert_eq!(
        (config.bind.as_str(), config.port, config.redis),
        ("127.0.0.1", 3000, None)
    );

    let env = |name: &str| match name {
        "PORT" => Some("0".to_owned()),
        "BIND" => Some("0.0.0.0".to_owned()),
        "REDIS_URL" => Some("redis://env".to_owned()),
        _ => None,
    };
    let config = Config::parse(args(&[]), env).expect("from the environment");
    assert_eq!((config.bind.as_str(), config.port), ("0.0.0.0", 0));
    assert_eq!(config.redis.as_deref(), Some("redis://env"));

    // Arguments win, in both spellings.
    let config = Config::parse(
        args(&["--port", "8080", "--bind=::1", "--redis=redis://arg"]),
        env,
    )
    .expect("from arguments");
    assert_eq!((config.bind.as_str(), config.port), ("::1", 8080));
    assert_eq!(config.redis.as_deref(), Some("redis://arg"));

    for bad in [
        &["--port", "70000"][..],
        &["--port"],
        &["--what"],
        &["--port", "-1"],
    ] {
        assert!(
            Config::parse(args(bad), no_env).is_err(),
            "{bad:?} is refused"
        );
    }
    // A Redis URL is refused rather than ignored when the build has no Redis backend.
    let with_redis =
        Config::parse(args(&["--redis", "redis://127.0.0.1"]), no_env).expect("parsed");
    if cfg!(feature = "redis") {
        assert!(with_redis.check_backend().is_ok());
    } else {
        let error = with_redis.check_backend().expect_err("refused");
        assert!(error.contains("Redis"), "{error}");
    }
    assert!(Config::parse(args(&[]), no_env)
        .expect("parsed")
        .check_backend()
        .is_ok());
}

/// The hub keeps what the contract promises: 1,000 statuses for 10 minutes, all replayable.
#[test]
fn hub_settings_keep_the_contract() {
    let config = axum_demo::common::hub_config();
    assert!(config.history_capacity >= 1000);
    assert!(config.history_ttl >= std::time::Duration::from_secs(600));
    assert!(config.subscriber_buffer >= config.history_capacity);
}
