//! The axum demo server, run as a process, against the HTTP contract.

mod support;

use support::demo::Demo;
use support::Server;

fn start() -> Server {
    Demo::Axum.start(&[])
}

support::demo_cases!(start);

/// The demo refuses what it cannot honour, and says how it is used.
#[test]
fn arguments_are_checked() {
    let exe = Demo::Axum.executable();
    let run = |args: &[&str]| {
        std::process::Command::new(&exe)
            .args(args)
            .env_remove("PORT")
            .env_remove("REDIS_URL")
            .output()
            .expect("run the demo")
    };
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("usage:"));
    for bad in [
        &["--port", "70000"][..],
        &["--port"],
        &["--what"],
        &["--port", "-1"],
    ] {
        let out = run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?} is refused");
    }
    if !cfg!(feature = "redis") {
        // A Redis URL is refused rather than ignored when the build has no Redis backend.
        let out = run(&["--port", "0", "--redis", "redis://127.0.0.1"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("Redis"));
    }
}
