//! From results to delivered alerts: the monitor engine (`engine`) feeds each
//! probe's monitor and turns its transitions into alerts, and the durable outbox
//! (`outbox`) delivers them to the channels in order, with retries and backoff;
//! in the agent, writes reach the store through `pending`, which holds them
//! (and lets the outbox send their alerts) while the store cannot be written.
//! The channels themselves (what an alert is, and one file per channel kind) live
//! in `crate::channel`. `heartbeat` is the agent's dead-man's switch.

pub mod engine;
pub(crate) mod heartbeat;
pub mod outbox;
pub(crate) mod pending;
