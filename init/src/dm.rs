//! Device-mapper through its ioctls on `/dev/mapper/control`: create a device, load a table,
//! resume it. Used by stage 0 to set up the dm-verity root (no `veritysetup`/`dmsetup` at run
//! time).
//!
//! The `struct dm_ioctl` header and `struct dm_target_spec` are encoded as bytes by pure
//! functions ([`header`], [`table_load`], [`decode_dev`]) so they are tested without a kernel;
//! [`Control`] does the three ioctls.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// The control device.
pub const CONTROL: &str = "/dev/mapper/control";
/// Major and minor of the control device (misc 10:236), for `mknod` when devtmpfs has not
/// created it yet.
pub const CONTROL_DEV: (u64, u64) = (10, 236);
/// `sizeof(struct dm_ioctl)`.
pub const HEADER_SIZE: usize = 312;
/// `sizeof(struct dm_target_spec)`.
pub const SPEC_SIZE: usize = 40;
/// Size of the buffer handed to the kernel (room for its answers).
pub const BUFFER_SIZE: usize = 16 * 1024;

/// `DM_READONLY_FLAG`.
pub const READONLY_FLAG: u32 = 1;

/// The ioctl commands used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// `DM_DEV_CREATE`.
    Create = 3,
    /// `DM_DEV_REMOVE`.
    Remove = 4,
    /// `DM_DEV_SUSPEND` (resume without `DM_SUSPEND_FLAG`).
    Suspend = 6,
    /// `DM_TABLE_LOAD`.
    TableLoad = 9,
}

impl Cmd {
    /// The request number: `_IOWR(0xfd, nr, struct dm_ioctl)`.
    #[must_use]
    pub fn request(self) -> u64 {
        (3u64 << 30) | ((HEADER_SIZE as u64) << 16) | (0xfd << 8) | self as u64
    }

    fn name(self) -> &'static str {
        match self {
            Cmd::Create => "DM_DEV_CREATE",
            Cmd::Remove => "DM_DEV_REMOVE",
            Cmd::Suspend => "DM_DEV_SUSPEND",
            Cmd::TableLoad => "DM_TABLE_LOAD",
        }
    }
}

/// Errors of device-mapper calls.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    /// The control device cannot be opened.
    #[error("open {}: {source}", path.display())]
    Open {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A name or parameter does not fit.
    #[error("device-mapper {what} {value:?} is too long")]
    TooLong {
        /// What.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// An ioctl failed.
    #[error("{cmd} for {name}: {source}")]
    Ioctl {
        /// The command.
        cmd: &'static str,
        /// The device name.
        name: String,
        /// The errno.
        source: Errno,
    },
}

/// One target of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// First sector.
    pub start: u64,
    /// Length in 512-byte sectors.
    pub length: u64,
    /// Target type (`verity`).
    pub kind: String,
    /// Its parameter string.
    pub params: String,
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// A `struct dm_ioctl` header for device `name`, in a zeroed [`BUFFER_SIZE`] buffer.
///
/// # Errors
/// The name does not fit its 128 bytes (with the terminating NUL).
pub fn header(name: &str, flags: u32, target_count: u32) -> Result<Vec<u8>, DmError> {
    if name.len() >= 128 || name.is_empty() {
        return Err(DmError::TooLong {
            what: "name",
            value: name.to_owned(),
        });
    }
    let mut buf = vec![0u8; BUFFER_SIZE];
    put(&mut buf, 0, &4u32.to_ne_bytes());
    put(&mut buf, 12, &(BUFFER_SIZE as u32).to_ne_bytes());
    put(&mut buf, 16, &(HEADER_SIZE as u32).to_ne_bytes());
    put(&mut buf, 20, &target_count.to_ne_bytes());
    put(&mut buf, 28, &flags.to_ne_bytes());
    put(&mut buf, 48, name.as_bytes());
    Ok(buf)
}

/// A `DM_TABLE_LOAD` buffer: header plus one `dm_target_spec` and its NUL-terminated,
/// 8-byte-padded parameters per target.
///
/// # Errors
/// A name, type or the whole table does not fit.
pub fn table_load(name: &str, flags: u32, targets: &[Target]) -> Result<Vec<u8>, DmError> {
    let count = u32::try_from(targets.len()).map_err(|_| DmError::TooLong {
        what: "table",
        value: format!("{} targets", targets.len()),
    })?;
    let mut buf = header(name, flags, count)?;
    let mut at = HEADER_SIZE;
    for t in targets {
        if t.kind.len() >= 16 {
            return Err(DmError::TooLong {
                what: "target type",
                value: t.kind.clone(),
            });
        }
        let params_len = (t.params.len() + 1).div_ceil(8) * 8;
        let next = SPEC_SIZE + params_len;
        if at + next > BUFFER_SIZE {
            return Err(DmError::TooLong {
                what: "table",
                value: t.params.clone(),
            });
        }
        put(&mut buf, at, &t.start.to_ne_bytes());
        put(&mut buf, at + 8, &t.length.to_ne_bytes());
        put(&mut buf, at + 20, &(next as u32).to_ne_bytes());
        put(&mut buf, at + 24, t.kind.as_bytes());
        put(&mut buf, at + SPEC_SIZE, t.params.as_bytes());
        at += next;
    }
    Ok(buf)
}

/// The `dev` field of a `dm_ioctl` answer (the kernel's `huge_encode_dev`) as (major, minor).
#[must_use]
pub fn decode_dev(dev: u64) -> (u64, u64) {
    let major = (dev & 0xf_ff00) >> 8;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xf_ff00);
    (major, minor)
}

/// An open `/dev/mapper/control`.
#[derive(Debug)]
pub struct Control {
    file: File,
}

impl Control {
    /// Opens the control device at `path`.
    ///
    /// # Errors
    /// It cannot be opened.
    pub fn open(path: &Path) -> Result<Self, DmError> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| DmError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self { file })
    }

    fn call(&self, cmd: Cmd, name: &str, buf: &mut [u8]) -> Result<(), DmError> {
        if buf.len() < HEADER_SIZE {
            return Err(DmError::TooLong {
                what: "buffer",
                value: name.to_owned(),
            });
        }
        // SAFETY: `buf` is a live, writable buffer of BUFFER_SIZE bytes whose header says so
        // (data_size); the kernel reads and writes at most data_size bytes of it. The fd is
        // owned by `self.file` and open for the duration of the call.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                cmd.request() as libc::c_ulong,
                buf.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(DmError::Ioctl {
                cmd: cmd.name(),
                name: name.to_owned(),
                source: Errno::last(),
            });
        }
        Ok(())
    }

    /// `DM_DEV_CREATE`: a new, empty device; returns its (major, minor).
    ///
    /// # Errors
    /// The ioctl fails (e.g. `EBUSY`: the name exists).
    pub fn create(&self, name: &str) -> Result<(u64, u64), DmError> {
        let mut buf = header(name, 0, 0)?;
        self.call(Cmd::Create, name, &mut buf)?;
        let dev = buf
            .get(40..48)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_ne_bytes);
        Ok(decode_dev(dev))
    }

    /// `DM_TABLE_LOAD` of `targets` (read-only when `read_only`).
    ///
    /// # Errors
    /// The ioctl fails (the kernel logs why: a bad table line, a missing target module).
    pub fn load(&self, name: &str, targets: &[Target], read_only: bool) -> Result<(), DmError> {
        let flags = if read_only { READONLY_FLAG } else { 0 };
        let mut buf = table_load(name, flags, targets)?;
        self.call(Cmd::TableLoad, name, &mut buf)
    }

    /// `DM_DEV_SUSPEND` without the suspend flag: activates the loaded table.
    ///
    /// # Errors
    /// The ioctl fails (for verity: the table could not be activated).
    pub fn resume(&self, name: &str) -> Result<(), DmError> {
        let mut buf = header(name, 0, 0)?;
        self.call(Cmd::Suspend, name, &mut buf)
    }

    /// `DM_DEV_REMOVE` (cleanup after a failed setup).
    ///
    /// # Errors
    /// The ioctl fails.
    pub fn remove(&self, name: &str) -> Result<(), DmError> {
        let mut buf = header(name, 0, 0)?;
        self.call(Cmd::Remove, name, &mut buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        // From <linux/dm-ioctl.h> on x86-64: DM_DEV_CREATE = 0xc138fd03 etc.
        assert_eq!(Cmd::Create.request(), 0xc138_fd03);
        assert_eq!(Cmd::Remove.request(), 0xc138_fd04);
        assert_eq!(Cmd::Suspend.request(), 0xc138_fd06);
        assert_eq!(Cmd::TableLoad.request(), 0xc138_fd09);
    }

    #[test]
    fn header_layout() {
        let b = header("root", READONLY_FLAG, 1).unwrap();
        assert_eq!(b.len(), BUFFER_SIZE);
        assert_eq!(u32_at(&b, 0), 4);
        assert_eq!(u32_at(&b, 12), BUFFER_SIZE as u32);
        assert_eq!(u32_at(&b, 16), HEADER_SIZE as u32);
        assert_eq!(u32_at(&b, 20), 1);
        assert_eq!(u32_at(&b, 28), READONLY_FLAG);
        assert_eq!(&b[48..53], b"root\0");
        assert!(header(&"x".repeat(128), 0, 0).is_err());
        assert!(header("", 0, 0).is_err());
    }

    #[test]
    fn table_layout() {
        let t = Target {
            start: 0,
            length: 16,
            kind: "verity".into(),
            params: "1 254:1 254:2 4096 4096 2 1 sha256 ab cd".into(),
        };
        let b = table_load("root", READONLY_FLAG, std::slice::from_ref(&t)).unwrap();
        let s = HEADER_SIZE;
        assert_eq!(u64::from_ne_bytes(b[s..s + 8].try_into().unwrap()), 0);
        assert_eq!(u64::from_ne_bytes(b[s + 8..s + 16].try_into().unwrap()), 16);
        let next = u32_at(&b, s + 20) as usize;
        assert_eq!(next % 8, 0);
        assert_eq!(next, SPEC_SIZE + (t.params.len() + 1).div_ceil(8) * 8);
        assert_eq!(&b[s + 24..s + 31], b"verity\0");
        assert_eq!(
            &b[s + SPEC_SIZE..s + SPEC_SIZE + t.params.len()],
            t.params.as_bytes()
        );
        assert_eq!(b[s + SPEC_SIZE + t.params.len()], 0);
        let long = Target {
            kind: "x".repeat(16),
            ..t
        };
        assert!(table_load("root", 0, &[long]).is_err());
    }

    #[test]
    fn dev_decoding() {
        // huge_encode_dev(MKDEV(254, 0)) and MKDEV(254, 300).
        assert_eq!(decode_dev(254 << 8), (254, 0));
        assert_eq!(decode_dev((254 << 8) | 44 | (256 << 12)), (254, 300));
    }
}
