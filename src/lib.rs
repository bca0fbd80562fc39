//! sonde — a health-monitoring probe agent.
//!
//! Data flows one way: config -> validate -> build -> scheduler -> runner -> `Probe::run` ->
//! `Outcome` -> record (logs, and later metrics, store, monitors and alerts).
//! `main.rs` only parses the command line and maps errors to exit codes; everything
//! testable lives in this library.

pub mod agent;
pub mod alert;
pub mod api;
pub mod build;
pub mod channel;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credential;
pub mod demo;
pub mod file;
pub mod guid;
pub mod human;
pub mod jwt;
pub mod lab;
pub mod monitor;
pub mod names;
pub mod net;
pub mod outcome;
pub mod output;
pub mod probe;
pub mod remote;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod secret;
pub mod spec;
pub mod store;
pub mod telemetry;
