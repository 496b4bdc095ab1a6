//! rampart-init: the PID 1 of a rampart host.
//!
//! Stage 0 runs from the initramfs as `/init` and moves the image into a read-only tmpfs root;
//! stage 1 runs as `/sbin/init` on that root, hardens the host and supervises its services.
//! Every kernel concern has its own module; each turns the validated host config into a plan
//! (plain data) and applies it with as thin a layer of syscalls as possible.

pub mod apparmor;
pub mod audit;
pub mod boot;
pub mod cgroup;
pub mod cli;
pub mod control;
pub mod ctrevents;
pub mod dhcp;
pub mod disk;
pub mod dm;
pub mod event;
pub mod firewall;
pub mod kmod;
pub mod kubelet;
pub mod kubemount;
pub mod log;
pub mod logfwd;
pub mod metrics;
pub mod mount;
pub mod netlink;
pub mod network;
pub mod pause;
pub mod procfs;
pub mod relay;
pub mod security;
pub mod shutdown;
pub mod supervisor;
pub mod switchroot;
pub mod sysctl;
pub mod tool;
