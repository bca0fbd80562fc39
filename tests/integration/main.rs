//! sonde's integration tests: one binary, shared helpers in `support`, one module
//! per area. They run the real `sonde` binary and real peers (openssl-made
//! certificates, TLS and HTTP servers) on 127.0.0.1 only.

mod alerting;
mod api;
mod attacks;
mod certificates;
mod channels;
mod cli;
mod config_fixtures;
mod fuzz_corpus;
mod ha;
mod hostile;
mod hybrid;
mod hybrid_app;
mod init;
mod layering;
mod monitoring;
mod otel;
mod redirects;
mod reload;
mod supervision;
mod support;
mod telemetry;
