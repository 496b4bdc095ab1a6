//! The control API: PID 1 serves it on a unix socket under `/run/rampart/` (root only), the
//! `rampart` CLI, the host-channel relay, the log forwarder and the metrics endpoint speak it.
//!
//! [`proto`] is the wire format (length-prefixed JSON, versioned, bounded), shared by the
//! server in PID 1 and every client. `docs/control.md` documents it for operators.
//!
//! Inside PID 1: [`ring`] is the in-memory log ring every log line, lifecycle event and audit
//! line goes to; [`server`] serves the socket from PID 1's event loop ([`conn`] holds the
//! per-connection logic as pure functions, [`status`] the figures of a `status` reply).

pub mod client;
pub mod conn;
pub mod proto;
pub mod ring;
pub mod server;
pub mod status;
#[cfg(test)]
pub(crate) mod testing;
