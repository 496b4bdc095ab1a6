//! A GUID Partition Table writer: protective MBR, primary header and entry array, backup entry
//! array and header, with their CRC32s. Partitions are placed in order, each aligned to 1 MiB.
//!
//! [`plan`] is pure (specs to a [`Layout`]); [`Layout::primary`] and [`Layout::backup`] render
//! the bytes that go at the start and at the end of the disk.

use std::fmt;

/// Logical sector size.
pub const SECTOR: u64 = 512;
/// Partition alignment (1 MiB).
pub const ALIGN: u64 = 1 << 20;
/// Number of partition entries (the usual 128).
pub const ENTRIES: u64 = 128;
/// Size of one entry.
pub const ENTRY_SIZE: u64 = 128;
/// Sectors of the entry array (16 KiB).
pub const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

/// A GUID, held in its textual (big-endian) byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

/// Errors of GUID parsing and layout planning.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// A GUID string is malformed.
    #[error("invalid guid {text:?}")]
    BadGuid {
        /// The text.
        text: String,
    },
    /// A label is longer than 36 UTF-16 code units.
    #[error("partition label {label:?} is longer than 36 characters")]
    LongLabel {
        /// The label.
        label: String,
    },
    /// Too many partitions.
    #[error("{count} partitions: at most {ENTRIES}")]
    TooMany {
        /// How many.
        count: usize,
    },
}

impl Guid {
    /// Parse `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn parse(text: &str) -> Result<Self, GptError> {
        let bad = || GptError::BadGuid {
            text: text.to_string(),
        };
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        let dashes: Vec<usize> = text.match_indices('-').map(|(i, _)| i).collect();
        if hex.len() != 32 || dashes != [8, 13, 18, 23] {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(Self(out))
    }

    /// A version-4-shaped GUID from the first 16 bytes of a digest (content-derived).
    pub fn from_digest(digest: &[u8]) -> Self {
        let mut out = [0u8; 16];
        for (o, d) in out.iter_mut().zip(digest) {
            *o = *d;
        }
        out[6] = (out[6] & 0x0f) | 0x40;
        out[8] = (out[8] & 0x3f) | 0x80;
        Self(out)
    }

    /// The on-disk (mixed-endian) encoding: the first three fields little-endian.
    pub fn to_disk(self) -> [u8; 16] {
        let g = self.0;
        let mut d = g;
        d[0..4].copy_from_slice(&[g[3], g[2], g[1], g[0]]);
        d[4..6].copy_from_slice(&[g[5], g[4]]);
        d[6..8].copy_from_slice(&[g[7], g[6]]);
        d
    }

    /// From the on-disk encoding.
    pub fn from_disk(d: [u8; 16]) -> Self {
        let mut g = d;
        g[0..4].copy_from_slice(&[d[3], d[2], d[1], d[0]]);
        g[4..6].copy_from_slice(&[d[5], d[4]]);
        g[6..8].copy_from_slice(&[d[7], d[6]]);
        Self(g)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Partition type GUIDs (UEFI for the ESP, the Discoverable Partitions Specification for the rest).
pub mod types {
    /// EFI system partition.
    pub const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    /// Root partition, x86-64.
    pub const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
    /// Root verity partition, x86-64.
    pub const ROOT_VERITY_X86_64: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
    /// Variable data partition (`/var`).
    pub const VAR: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
}

/// A partition to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Its type.
    pub type_guid: Guid,
    /// Its unique GUID.
    pub guid: Guid,
    /// Its label (at most 36 UTF-16 code units).
    pub label: String,
    /// Its size in bytes (rounded up to the alignment).
    pub size: u64,
}

/// A placed partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// What it is.
    pub spec: PartitionSpec,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
}

impl Placed {
    /// Byte offset on the disk.
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }

    /// Whether it is empty (never, for a planned partition).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The disk GUID.
    pub disk_guid: Guid,
    /// Disk size in sectors.
    pub total_sectors: u64,
    /// Partitions in table order.
    pub partitions: Vec<Placed>,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Place `specs` in order from 1 MiB, each on a 1 MiB boundary; the disk ends 1 MiB after the
/// last partition (room for the backup table).
pub fn plan(disk_guid: Guid, specs: &[PartitionSpec]) -> Result<Layout, GptError> {
    if specs.len() as u64 > ENTRIES {
        return Err(GptError::TooMany { count: specs.len() });
    }
    let mut next = ALIGN;
    let mut partitions = Vec::new();
    for s in specs {
        if s.label.encode_utf16().count() > 36 {
            return Err(GptError::LongLabel {
                label: s.label.clone(),
            });
        }
        let size = align_up(s.size.max(1), ALIGN);
        partitions.push(Placed {
            spec: s.clone(),
            first_lba: next / SECTOR,
            last_lba: (next + size) / SECTOR - 1,
        });
        next += size;
    }
    Ok(Layout {
        disk_guid,
        total_sectors: (next + ALIGN) / SECTOR,
        partitions,
    })
}

/// CRC32 (IEEE, reflected, as GPT uses).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

impl Layout {
    /// Size of the disk in bytes.
    pub fn disk_size(&self) -> u64 {
        self.total_sectors * SECTOR
    }

    fn last_usable(&self) -> u64 {
        self.total_sectors - 1 - ENTRY_SECTORS - 1
    }

    /// The partition entry array (16 KiB).
    pub fn entries(&self) -> Vec<u8> {
        let mut out = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (p, e) in self
            .partitions
            .iter()
            .zip(out.chunks_exact_mut(ENTRY_SIZE as usize))
        {
            e[0..16].copy_from_slice(&p.spec.type_guid.to_disk());
            e[16..32].copy_from_slice(&p.spec.guid.to_disk());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            // Attributes stay 0.
            for (i, u) in p.spec.label.encode_utf16().enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
            }
        }
        out
    }

    fn header(&self, current: u64, backup: u64, entries_lba: u64, entries_crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + ENTRY_SECTORS).to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_disk());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Sectors 0 to 33: protective MBR, primary header, entry array.
    pub fn primary(&self) -> Vec<u8> {
        let mut out = vec![0u8; SECTOR as usize];
        // Protective MBR: one partition of type 0xEE covering the disk (capped at 32 bits).
        let mbr = &mut out[446..462];
        mbr[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
        mbr[4] = 0xEE;
        mbr[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        mbr[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.total_sectors - 1).unwrap_or(u32::MAX);
        mbr[12..16].copy_from_slice(&size.to_le_bytes());
        out[510] = 0x55;
        out[511] = 0xAA;
        let entries = self.entries();
        let crc = crc32(&entries);
        out.extend(self.header(1, self.total_sectors - 1, 2, crc));
        out.extend(entries);
        out
    }

    /// The last 33 sectors: backup entry array, backup header.
    pub fn backup(&self) -> Vec<u8> {
        let entries = self.entries();
        let crc = crc32(&entries);
        let entries_lba = self.total_sectors - 1 - ENTRY_SECTORS;
        let mut out = entries;
        out.extend(self.header(self.total_sectors - 1, 1, entries_lba, crc));
        out
    }

    /// Byte offset of [`Layout::backup`].
    pub fn backup_offset(&self) -> u64 {
        (self.total_sectors - 1 - ENTRY_SECTORS) * SECTOR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(t: &str, label: &str, size: u64) -> PartitionSpec {
        PartitionSpec {
            type_guid: Guid::parse(t).unwrap(),
            guid: Guid::from_digest(label.as_bytes()),
            label: label.into(),
            size,
        }
    }

    #[test]
    fn guid_round_trips_and_encodes_mixed_endian() {
        let g = Guid::parse(types::ESP).unwrap();
        assert_eq!(g.to_string(), types::ESP);
        let d = g.to_disk();
        assert_eq!(&d[..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(&d[8..], &[0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
        assert_eq!(Guid::from_disk(d), g);
        for bad in [
            "",
            "c12a7328f81f11d2ba4b00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93x",
        ] {
            assert!(Guid::parse(bad).is_err(), "{bad}");
        }
        let h = Guid::from_digest(&[0xff; 32]);
        assert_eq!(h.to_string(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn layout_plan() {
        let l = plan(
            Guid::from_digest(b"disk"),
            &[
                spec(types::ESP, "esp", 64 << 20),
                spec(types::ROOT_X86_64, "root", 3 * 4096),
                spec(types::ROOT_VERITY_X86_64, "root-verity", (1 << 20) + 1),
            ],
        )
        .unwrap();
        let firsts: Vec<(u64, u64)> = l
            .partitions
            .iter()
            .map(|p| (p.first_lba, p.last_lba))
            .collect();
        assert_eq!(
            firsts,
            vec![(2048, 133_119), (133_120, 135_167), (135_168, 139_263)]
        );
        assert_eq!(l.total_sectors, 139_264 + 2048);
        assert_eq!(l.partitions[1].offset(), 65 << 20);
        assert_eq!(l.partitions[2].len(), 2 << 20);
        assert!(plan(Guid([0; 16]), &[spec(types::ESP, &"x".repeat(37), 1)]).is_err());
    }

    #[test]
    fn headers_are_consistent() {
        let l = plan(
            Guid::from_digest(b"disk"),
            &[spec(types::VAR, "state", 1 << 20)],
        )
        .unwrap();
        let p = l.primary();
        assert_eq!(p.len(), 34 * 512);
        assert_eq!(&p[510..512], &[0x55, 0xAA]);
        assert_eq!(p[446 + 4], 0xEE);
        let h = &p[512..1024];
        assert_eq!(&h[..8], b"EFI PART");
        let mut z = h[..92].to_vec();
        z[16..20].fill(0);
        assert_eq!(u32::from_le_bytes(h[16..20].try_into().unwrap()), crc32(&z));
        assert_eq!(
            u32::from_le_bytes(h[88..92].try_into().unwrap()),
            crc32(&p[1024..])
        );
        assert_eq!(
            u64::from_le_bytes(h[32..40].try_into().unwrap()),
            l.total_sectors - 1
        );
        let b = l.backup();
        assert_eq!(b.len(), 33 * 512);
        assert_eq!(l.backup_offset() + b.len() as u64, l.disk_size());
        let bh = &b[32 * 512..];
        assert_eq!(
            u64::from_le_bytes(bh[24..32].try_into().unwrap()),
            l.total_sectors - 1
        );
        assert_eq!(
            u64::from_le_bytes(bh[72..80].try_into().unwrap()),
            l.total_sectors - 33
        );
        assert_eq!(&b[..32 * 512], &p[1024..]);
        // The label is UTF-16LE at offset 56 of the entry.
        assert_eq!(&p[1024 + 56..1024 + 66], b"s\0t\0a\0t\0e\0");
    }
}
