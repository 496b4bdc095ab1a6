//! End-to-end test support for rampart.
//!
//! - [`report`]: what the in-guest checker (`rampart-check`) reports, as serde types, plus the
//!   pure parsers it uses (`/proc/self/mountinfo`, `/proc/PID/stat`).
//! - [`guest`]: how the checker gathers that report inside the guest (it runs as a service).
//! - [`expect`]: pure comparisons of a report against the plans `rampart_init` derives from the
//!   same host config (mount flags and options, sysctl values).
//! - [`plansh`]: the mount and sysctl plans rendered as busybox shell, for the boot benchmark.
//! - [`harness`]: host side: locates the binaries and the kernel, writes test host files,
//!   builds images with `rampart-image build` and boots them with `rampart-image boot`.

pub mod cluster;
pub mod containerd;
pub mod cri;
pub mod ctlprobe;
pub mod expect;
pub mod guest;
pub mod hardening;
pub mod harness;
pub mod kubelet;
pub mod live;
pub mod network;
pub mod plansh;
pub mod report;
