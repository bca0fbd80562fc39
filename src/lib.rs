//! sonde — a health-monitoring probe agent.
//!
//! Data flows one way: config -> validate -> build -> schedule -> run -> record ->
//! evaluate -> alert, with telemetry beside it. The modules are layered the same
//! way: a module imports from its own layer and the ones before it in this list,
//! never from a later one.
//!
//! 1. Leaves, which import nothing of the crate's but each other: `clock`, `guid`,
//!    `human` (durations and sizes), `spec` (problems found in a kind's settings),
//!    `secret` (`*_env`/`*_file` secrets), `file` (bounded reads of regular
//!    files), `net` (HTTP, SMTP and TLS client
//!    layers), `names` (the `named_enum!` declaration), `jwt`, `credential`,
//!    `schedule` (cron and `every`), `reload` (the reload request channel),
//!    `store` (SQLite).
//! 2. `outcome`: statuses, categories, `Outcome`, the `Probe` trait, `RunRecord`;
//!    `output` prints outcomes.
//! 3. The kinds and the pure evaluation: `probe` (one file per probe kind),
//!    `channel` (one file per channel kind), `monitor` (the monitor policy, the
//!    state machine, maintenance windows).
//! 4. `config`: reads the files and checks them, with the kinds' spec types and
//!    the monitor policy.
//! 5. `runner` (one run: timeout, span, panic isolation) and `scheduler`.
//! 6. `build`: turns a loaded config into runnable targets and channels, the
//!    same for `sonde run` and `sonde validate`.
//! 7. `alert`: the monitor engine (results -> states -> notices), the durable
//!    outbox that sends alerts through the channels, the writes kept in memory
//!    while the store fails, and the heartbeat; `supervise`: restarts the
//!    agent's tasks with backoff and keeps the pipeline's health for `/healthz`.
//! 8. `api`: the HTTP server (routes over the metrics, the engine's views and the
//!    store); `remote`: its client for `sonde status` and `sonde probe --remote`.
//! 9. `agent`: runs the scheduler, the engine, the outbox and the API (through
//!    `ApiState::new`) on what `build` made, and reloads them.
//! 10. `cmd`: each command's logic, with `cli` (the clap definitions); `lab` and
//!     `demo`: the loopback emulation of the cloud side and the demo run on it;
//!     `fuzzing`: the entry points the fuzz targets in `fuzz/` call.
//!
//! `telemetry` is a side layer: every layer emits its typed events; it imports only
//! data types. `main.rs` parses the command line, sets up logging and telemetry,
//! calls `cmd` and maps what it returns to output and exit codes; everything
//! testable lives in this library.

pub mod agent;
pub mod alert;
pub(crate) mod api;
pub mod build;
pub mod channel;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod credential;
pub mod demo;
pub(crate) mod file;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod guid;
pub(crate) mod human;
pub(crate) mod init;
pub(crate) mod jwt;
pub mod lab;
pub mod monitor;
pub(crate) mod names;
pub(crate) mod net;
pub mod outcome;
pub mod output;
pub mod probe;
pub mod reload;
pub(crate) mod remote;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub(crate) mod secret;
pub mod spec;
pub mod store;
pub mod supervise;
pub mod telemetry;
