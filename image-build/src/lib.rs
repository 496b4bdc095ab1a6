//! rampart-image: builds and boots rampart images.
//!
//! Modules, one concern each: [`cpio`] (the deterministic initramfs writer), [`elf`]
//! (a binary's interpreter and libraries), [`kmod`] (modules and their load order),
//! [`kernel`] (the ELF kernel out of `vmlinuz`), [`build`] (image assembly) with
//! [`manifest`], and [`qemu`] (booting an image and classifying how it ended).

pub mod build;
pub mod cpio;
pub mod elf;
pub mod kernel;
pub mod kmod;
pub mod manifest;
pub mod qemu;
