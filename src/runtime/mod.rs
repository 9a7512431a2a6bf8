//! Process plumbing shared by both binaries: logging, systemd notifications, signals.

pub mod logging;
pub mod signals;
pub mod systemd;
