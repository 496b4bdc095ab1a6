//! rampart-image: builds and boots rampart images.
//!
//! Modules, one concern each: [`cpio`] (the deterministic initramfs writer), [`elf`]
//! (a binary's interpreter and libraries), [`kmod`] (modules and their load order),
//! [`kernel`] (the ELF kernel out of `vmlinuz`), [`build`] (image assembly) with
//! [`manifest`], and [`qemu`] (booting an image and classifying how it ended).

pub mod apparmor;
pub mod build;
pub mod cmdline;
pub mod containerd;
pub mod cpio;
pub mod cri;
pub mod disk;
pub mod elf;
pub mod firewall_cmd;
pub mod kernel;
pub mod kmod;
pub mod kubelet;
pub mod manifest;
pub mod network;
pub mod oci;
pub mod operate;
pub mod qemu;
