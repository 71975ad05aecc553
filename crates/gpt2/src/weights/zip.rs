//! Just enough of the zip format to find the entries of a torch.save archive: the end of
//! central directory record (zip64 included, for checkpoints over 4 GiB), the central
//! directory, and each entry's local header to find where its bytes start. torch writes every
//! entry uncompressed, so an entry is a byte range of the mapped file; a compressed entry is
//! refused rather than inflated.

use std::ops::Range;

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;
const ZIP64_EXTRA_ID: u16 = 0x0001;

pub(super) struct Entry {
    pub(super) name: String,
    pub(super) data: Range<usize>,
}

/// A little-endian cursor over a byte slice that fails instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn at(bytes: &'a [u8], pos: usize) -> Self {
        Reader { bytes, pos }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).ok_or("offset overflow")?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| format!("truncated: needs bytes {}..{end}", self.pos))?;
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

fn to_usize(v: u64) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("offset {v} does not fit in memory"))
}

/// The archive's entries, each with the byte range of its (stored) data.
pub(super) fn entries(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let eocd = find_eocd(bytes)?;
    let mut r = Reader::at(bytes, eocd + 4);
    let _disk = r.u16()?;
    let _cd_disk = r.u16()?;
    let _disk_entries = r.u16()?;
    let mut count = r.u16()? as u64;
    let _cd_size = r.u32()?;
    let mut cd_offset = r.u32()? as u64;
    if count == 0xFFFF || cd_offset == 0xFFFF_FFFF {
        (count, cd_offset) = zip64_eocd(bytes, eocd)?;
    }
    let mut r = Reader::at(bytes, to_usize(cd_offset)?);
    let mut out = Vec::new();
    for i in 0..count {
        let entry = central_entry(&mut r, bytes).map_err(|e| format!("entry {i}: {e}"))?;
        out.push(entry);
    }
    Ok(out)
}

fn find_eocd(bytes: &[u8]) -> Result<usize, String> {
    // The record is 22 bytes plus a comment of at most 65535 bytes, at the very end.
    if bytes.len() < 22 {
        return Err(format!(
            "{} bytes is too short for a zip archive",
            bytes.len()
        ));
    }
    let lowest = bytes.len().saturating_sub(22 + 0xFFFF);
    (lowest..=bytes.len() - 22)
        .rev()
        .find(|&i| bytes[i..i + 4] == EOCD_SIG.to_le_bytes())
        .ok_or_else(|| "no end-of-central-directory record: truncated or not a zip archive".into())
}

fn zip64_eocd(bytes: &[u8], eocd: usize) -> Result<(u64, u64), String> {
    let locator = eocd
        .checked_sub(20)
        .ok_or("zip64 locator missing before the end record")?;
    let mut r = Reader::at(bytes, locator);
    if r.u32()? != ZIP64_LOCATOR_SIG {
        return Err("zip64 sizes announced but no zip64 locator found".into());
    }
    let _disk = r.u32()?;
    let record = to_usize(r.u64()?)?;
    let mut r = Reader::at(bytes, record);
    if r.u32()? != ZIP64_EOCD_SIG {
        return Err("zip64 end record not where its locator points".into());
    }
    let _size = r.u64()?;
    let _made_by = r.u16()?;
    let _needed = r.u16()?;
    let _disk = r.u32()?;
    let _cd_disk = r.u32()?;
    let _disk_entries = r.u64()?;
    let count = r.u64()?;
    let _cd_size = r.u64()?;
    let cd_offset = r.u64()?;
    Ok((count, cd_offset))
}

fn central_entry(r: &mut Reader, bytes: &[u8]) -> Result<Entry, String> {
    if r.u32()? != CENTRAL_SIG {
        return Err("bad central directory signature".into());
    }
    let _made_by = r.u16()?;
    let _needed = r.u16()?;
    let flags = r.u16()?;
    let method = r.u16()?;
    let _time = r.u16()?;
    let _date = r.u16()?;
    let _crc = r.u32()?;
    let mut compressed = r.u32()? as u64;
    let mut size = r.u32()? as u64;
    let name_len = r.u16()? as usize;
    let extra_len = r.u16()? as usize;
    let comment_len = r.u16()? as usize;
    let _disk = r.u16()?;
    let _internal = r.u16()?;
    let _external = r.u32()?;
    let mut local = r.u32()? as u64;
    let name = String::from_utf8_lossy(r.take(name_len)?).into_owned();
    let mut extra = Reader::at(r.take(extra_len)?, 0);
    r.take(comment_len)?;

    // Zip64 keeps each 0xFFFFFFFF field's real value in the extra block, in this order.
    while extra.pos + 4 <= extra.bytes.len() {
        let id = extra.u16()?;
        let len = extra.u16()? as usize;
        let body = extra.take(len)?;
        if id == ZIP64_EXTRA_ID {
            let mut z = Reader::at(body, 0);
            if size == 0xFFFF_FFFF {
                size = z.u64()?;
            }
            if compressed == 0xFFFF_FFFF {
                compressed = z.u64()?;
            }
            if local == 0xFFFF_FFFF {
                local = z.u64()?;
            }
        }
    }
    if method != 0 || compressed != size {
        return Err(format!(
            "`{name}` is compressed (method {method}); torch.save writes uncompressed entries, \
             so this archive was re-packed: re-save it with torch.save"
        ));
    }
    if flags & 1 != 0 {
        return Err(format!("`{name}` is encrypted"));
    }
    let mut l = Reader::at(bytes, to_usize(local)?);
    if l.u32()? != LOCAL_SIG {
        return Err(format!(
            "`{name}`: bad local header signature at offset {local}"
        ));
    }
    l.take(22)?;
    let local_name = l.u16()? as usize;
    let local_extra = l.u16()? as usize;
    l.take(local_name)?;
    l.take(local_extra)?;
    let start = l.pos;
    let end = start
        .checked_add(to_usize(size)?)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            format!("`{name}`: its {size} bytes run past the end of the file (truncated?)")
        })?;
    Ok(Entry {
        name,
        data: start..end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored (method 0) archive, the way torch's writer lays one out; with `zip64`, the
    /// central directory and end record use the zip64 fields, as for checkpoints over 4 GiB.
    pub(crate) fn build(files: &[(&str, &[u8])], zip64: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let offset = out.len() as u64;
            let mut header = Vec::new();
            header.extend(LOCAL_SIG.to_le_bytes());
            header.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            header.extend(0u32.to_le_bytes()); // crc, unchecked
            header.extend((data.len() as u32).to_le_bytes());
            header.extend((data.len() as u32).to_le_bytes());
            header.extend((name.len() as u16).to_le_bytes());
            header.extend(0u16.to_le_bytes());
            out.extend(&header);
            out.extend(name.as_bytes());
            out.extend(*data);
            central.extend(CENTRAL_SIG.to_le_bytes());
            central.extend([45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            central.extend(0u32.to_le_bytes());
            let (small, extra) = if zip64 {
                let mut extra = ZIP64_EXTRA_ID.to_le_bytes().to_vec();
                extra.extend(24u16.to_le_bytes());
                extra.extend((data.len() as u64).to_le_bytes());
                extra.extend((data.len() as u64).to_le_bytes());
                extra.extend(offset.to_le_bytes());
                ([0xFFFF_FFFFu32; 3], extra)
            } else {
                let n = data.len() as u32;
                ([n, n, offset as u32], Vec::new())
            };
            central.extend(small[0].to_le_bytes());
            central.extend(small[1].to_le_bytes());
            central.extend((name.len() as u16).to_le_bytes());
            central.extend((extra.len() as u16).to_le_bytes());
            central.extend([0u8; 10]); // comment length, disk, attributes
            central.extend(small[2].to_le_bytes());
            central.extend(name.as_bytes());
            central.extend(extra);
        }
        let cd_offset = out.len() as u64;
        out.extend(&central);
        let n = files.len() as u64;
        if zip64 {
            let record = out.len() as u64;
            out.extend(ZIP64_EOCD_SIG.to_le_bytes());
            out.extend(44u64.to_le_bytes());
            out.extend([45, 0, 45, 0]);
            out.extend([0u8; 8]);
            out.extend(n.to_le_bytes());
            out.extend(n.to_le_bytes());
            out.extend((central.len() as u64).to_le_bytes());
            out.extend(cd_offset.to_le_bytes());
            out.extend(ZIP64_LOCATOR_SIG.to_le_bytes());
            out.extend(0u32.to_le_bytes());
            out.extend(record.to_le_bytes());
            out.extend(1u32.to_le_bytes());
        }
        out.extend(EOCD_SIG.to_le_bytes());
        out.extend([0u8; 4]);
        let (count, offset) = if zip64 {
            (0xFFFF, 0xFFFF_FFFF)
        } else {
            (n as u16, cd_offset as u32)
        };
        out.extend(count.to_le_bytes());
        out.extend(count.to_le_bytes());
        out.extend((central.len() as u32).to_le_bytes());
        out.extend(offset.to_le_bytes());
        out.extend([0u8; 2]);
        out
    }

    #[test]
    fn reads_back_what_it_wrote() {
        for zip64 in [false, true] {
            let zip = build(
                &[("a/data.pkl", b"hello"), ("a/data/0", b"\x01\x02\x03")],
                zip64,
            );
            let e = entries(&zip).unwrap();
            assert_eq!(e.len(), 2);
            assert_eq!(e[0].name, "a/data.pkl");
            assert_eq!(&zip[e[0].data.clone()], b"hello");
            assert_eq!(&zip[e[1].data.clone()], b"\x01\x02\x03");
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let zip = build(
            &[("a/data.pkl", b"hello"), ("a/data/0", b"\x01\x02\x03")],
            true,
        );
        for len in 0..zip.len() {
            let _ = entries(&zip[..len]); // must not panic
        }
        assert!(entries(&zip[..zip.len() - 1]).is_err());
        assert!(entries(b"PK\x03\x04 not really").is_err());
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random corruptions of a valid archive.
        let zip = build(
            &[("a/data.pkl", b"hello"), ("a/data/0", b"\x01\x02\x03")],
            true,
        );
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut z = zip.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state as usize) % z.len();
                z[i] = (state >> 32) as u8;
            }
            let _ = entries(&z);
        }
    }
}
