//! Model checks of the messenger's concurrency, with [`loom`](https://docs.rs/loom/0.7): the
//! models are in `tests/`; this library is empty.
//!
//! Built with `--cfg status_messenger_loom`, `status-messenger` compiles its messenger on
//! loom's primitives and a loom-aware stand-in for its channel, so the models run the
//! messenger's own code. Run them with:
//!
//! ```text
//! RUSTFLAGS="--cfg status_messenger_loom" \
//!     cargo test -p status-messenger-loom --release --target-dir target/loom
//! ```
//!
//! Without the cfg the tests compile to nothing. `LOOM_MAX_PREEMPTIONS` overrides the bound
//! each model sets for itself, for a deeper (and much longer) search.
