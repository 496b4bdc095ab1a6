//! The dm-verity hash tree, computed in Rust, in the on-disk format `veritysetup format`
//! writes: format version 1 ("normal" hash type), sha256, 4096-byte data and hash blocks,
//! a salt, and the 512-byte verity superblock at offset 0 of the hash device (the tree
//! starts at the next hash block).
//!
//! Layout of the hash device: block 0 holds the superblock (zero-padded to a block); then the
//! tree levels, the topmost (one block) first and the level hashing the data blocks last.
//! Each hash block holds 128 digests `sha256(salt || child block)`, zero-padded. The root hash
//! is `sha256(salt || top block)`; with a single data block there are no levels and the root
//! hash is the digest of that block.

use sha2::{Digest, Sha256};

/// Data and hash block size.
pub const BLOCK: usize = 4096;
/// Size of a sha256 digest.
const DIGEST: usize = 32;
/// Digests per hash block.
const PER_BLOCK: usize = BLOCK / DIGEST;
/// Size of the on-disk superblock.
pub const SUPERBLOCK_SIZE: usize = 512;
/// Hash blocks before the tree (the superblock's block); the `hash_start` of the dm table.
pub const HASH_START_BLOCKS: u64 = 1;

/// Errors of the verity computation.
#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    /// The data is not a whole number of blocks.
    #[error("verity data is {len} bytes, not a multiple of {BLOCK}")]
    Unaligned {
        /// Its length.
        len: usize,
    },
    /// The data is empty.
    #[error("verity data is empty")]
    Empty,
    /// The salt is longer than the superblock allows.
    #[error("verity salt is {len} bytes, more than 256")]
    SaltTooLong {
        /// Its length.
        len: usize,
    },
}

/// The result: the hash device bytes and what the dm table and command line need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verity {
    /// The hash device: superblock block plus the tree.
    pub hash_device: Vec<u8>,
    /// The root hash.
    pub root_hash: [u8; DIGEST],
    /// The salt used.
    pub salt: Vec<u8>,
    /// Number of data blocks.
    pub data_blocks: u64,
}

/// A deterministic salt for `data`: `sha256("rampart verity salt" || sha256(data))`.
pub fn content_salt(data: &[u8]) -> Vec<u8> {
    let inner = Sha256::digest(data);
    let mut h = Sha256::new();
    h.update(b"rampart verity salt");
    h.update(inner);
    h.finalize().to_vec()
}

fn salted(salt: &[u8], block: &[u8]) -> [u8; DIGEST] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Number of levels above the data for `blocks` data blocks (0 for a single block).
pub fn levels(blocks: u64) -> u32 {
    let bits = PER_BLOCK.trailing_zeros();
    let mut levels = 0;
    while bits * levels < 64 && (blocks - 1) >> (bits * levels) != 0 {
        levels += 1;
    }
    levels
}

/// The verity superblock (512 bytes, little-endian).
pub fn superblock(data_blocks: u64, salt: &[u8], uuid: [u8; 16]) -> Vec<u8> {
    let mut sb = Vec::with_capacity(SUPERBLOCK_SIZE);
    sb.extend_from_slice(b"verity\0\0");
    sb.extend_from_slice(&1u32.to_le_bytes()); // version
    sb.extend_from_slice(&1u32.to_le_bytes()); // hash type: normal
    sb.extend_from_slice(&uuid);
    let mut alg = [0u8; 32];
    alg[..6].copy_from_slice(b"sha256");
    sb.extend_from_slice(&alg);
    sb.extend_from_slice(&(BLOCK as u32).to_le_bytes());
    sb.extend_from_slice(&(BLOCK as u32).to_le_bytes());
    sb.extend_from_slice(&data_blocks.to_le_bytes());
    sb.extend_from_slice(&(salt.len() as u16).to_le_bytes());
    sb.extend_from_slice(&[0u8; 6]);
    let mut s = [0u8; 256];
    s[..salt.len()].copy_from_slice(salt);
    sb.extend_from_slice(&s);
    sb.resize(SUPERBLOCK_SIZE, 0);
    sb
}

/// Hash one level: digests of every `BLOCK` of `input`, packed 128 per zero-padded block.
fn hash_level(salt: &[u8], input: &[u8]) -> Vec<u8> {
    let blocks = input.len() / BLOCK;
    let out_blocks = blocks.div_ceil(PER_BLOCK);
    let mut out = vec![0u8; out_blocks * BLOCK];
    for (i, block) in input.chunks_exact(BLOCK).enumerate() {
        let d = salted(salt, block);
        let at = (i / PER_BLOCK) * BLOCK + (i % PER_BLOCK) * DIGEST;
        out[at..at + DIGEST].copy_from_slice(&d);
    }
    out
}

/// Compute the tree of `data` with `salt`; `uuid` goes in the superblock.
pub fn compute(data: &[u8], salt: &[u8], uuid: [u8; 16]) -> Result<Verity, VerityError> {
    if data.is_empty() {
        return Err(VerityError::Empty);
    }
    if !data.len().is_multiple_of(BLOCK) {
        return Err(VerityError::Unaligned { len: data.len() });
    }
    if salt.len() > 256 {
        return Err(VerityError::SaltTooLong { len: salt.len() });
    }
    let data_blocks = (data.len() / BLOCK) as u64;
    // Levels bottom-up: level 0 hashes the data, each next level hashes the previous one.
    let mut levels_bottom_up: Vec<Vec<u8>> = Vec::new();
    for _ in 0..levels(data_blocks) {
        let input = levels_bottom_up.last().map_or(data, Vec::as_slice);
        levels_bottom_up.push(hash_level(salt, input));
    }
    let top: &[u8] = levels_bottom_up.last().map_or(data, Vec::as_slice);
    let root_hash = salted(salt, top);
    let mut hash_device = superblock(data_blocks, salt, uuid);
    hash_device.resize(BLOCK, 0);
    for level in levels_bottom_up.iter().rev() {
        hash_device.extend_from_slice(level);
    }
    Ok(Verity {
        hash_device,
        root_hash,
        salt: salt.to_vec(),
        data_blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::hex;

    #[test]
    fn level_counts() {
        for (blocks, want) in [
            (1, 0),
            (2, 1),
            (128, 1),
            (129, 2),
            (128 * 128, 2),
            (128 * 128 + 1, 3),
        ] {
            assert_eq!(levels(blocks), want, "{blocks}");
        }
    }

    #[test]
    fn errors() {
        assert!(matches!(
            compute(&[], b"s", [0; 16]),
            Err(VerityError::Empty)
        ));
        assert!(matches!(
            compute(&[0; 100], b"s", [0; 16]),
            Err(VerityError::Unaligned { .. })
        ));
        assert!(matches!(
            compute(&[0; BLOCK], &[0; 257], [0; 16]),
            Err(VerityError::SaltTooLong { .. })
        ));
    }

    #[test]
    fn small_known_vector() {
        // Two zero blocks, salt "00": one level of one hash block holding two digests.
        let data = vec![0u8; 2 * BLOCK];
        let v = compute(&data, &[0u8], [0; 16]).unwrap();
        let mut leaf = Sha256::new();
        leaf.update([0u8]);
        leaf.update([0u8; BLOCK]);
        let leaf: [u8; 32] = leaf.finalize().into();
        let mut level = vec![0u8; BLOCK];
        level[..32].copy_from_slice(&leaf);
        level[32..64].copy_from_slice(&leaf);
        assert_eq!(v.root_hash, salted(&[0], &level));
        assert_eq!(v.hash_device.len(), 2 * BLOCK);
        assert_eq!(&v.hash_device[BLOCK..], &level[..]);
        assert_eq!(&v.hash_device[..8], b"verity\0\0");
        assert_eq!(v.data_blocks, 2);
        // Recorded with `veritysetup format --salt 00 --uuid 00000000-0000-0000-0000-000000000000`
        // on two zero blocks (cryptsetup 2.6.1).
        assert_eq!(
            hex(&v.root_hash),
            "5a3ffc73d6351ee7fe12d102a691070df84fb561619c43af6a1af8c887904f88"
        );
        // One block: the root hash is the block's own digest.
        let one = compute(&data[..BLOCK], &[0u8], [0; 16]).unwrap();
        assert_eq!(one.root_hash, leaf);
        assert_eq!(one.hash_device.len(), BLOCK);
    }

    #[test]
    fn matches_veritysetup() {
        let Some(vs) = [
            "/usr/sbin/veritysetup",
            "/sbin/veritysetup",
            "/usr/bin/veritysetup",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists()) else {
            eprintln!("skip: veritysetup (cryptsetup-bin) is not installed");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        // 300 blocks: two levels (3 leaf hash blocks, one top block).
        let data: Vec<u8> = (0..300 * BLOCK).map(|i| (i * 7 % 251) as u8).collect();
        let salt = content_salt(&data);
        let uuid = [0x11u8; 16];
        let ours = compute(&data, &salt, uuid).unwrap();
        let data_path = dir.path().join("data");
        let hash_path = dir.path().join("hash");
        std::fs::write(&data_path, &data).unwrap();
        let out = std::process::Command::new(vs)
            .arg("format")
            .arg(&data_path)
            .arg(&hash_path)
            .args([
                "--hash=sha256",
                "--data-block-size=4096",
                "--hash-block-size=4096",
                "--format=1",
            ])
            .arg(format!("--salt={}", hex(&salt)))
            .arg("--uuid=11111111-1111-1111-1111-111111111111")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let root = text
            .lines()
            .find_map(|l| l.strip_prefix("Root hash:"))
            .map(str::trim)
            .unwrap();
        assert_eq!(root, hex(&ours.root_hash));
        let theirs = std::fs::read(&hash_path).unwrap();
        assert_eq!(theirs.len(), ours.hash_device.len());
        assert!(theirs == ours.hash_device, "hash devices differ");
        // And veritysetup verifies ours.
        std::fs::write(&hash_path, &ours.hash_device).unwrap();
        let out = std::process::Command::new(vs)
            .arg("verify")
            .arg(&data_path)
            .arg(&hash_path)
            .arg(hex(&ours.root_hash))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
