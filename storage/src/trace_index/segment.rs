//! The bytes of one trace-index file: entries `trace id → first and last span start`,
//! sorted by trace id, fixed width, with a checksum.
//!
//! ```text
//! "CSTIDX01"  magic and version            8 bytes
//! count       number of entries, u64 LE    8 bytes
//! entries     count × (trace id 16 bytes, first start µs i64 LE, last start µs i64 LE)
//! crc32       of everything before it      4 bytes
//! ```
//!
//! A fixed width keeps lookups a binary search over the decoded slice, and the format small
//! enough (32 bytes per trace and file) to cache whole files in memory.

use bytes::{BufMut, Bytes, BytesMut};

const MAGIC: &[u8; 8] = b"CSTIDX01";
const HEADER: usize = 16;
const ENTRY: usize = 32;
const TRAILER: usize = 4;

/// A trace id as the index keys it: the 16 bytes of its 32 hex characters.
pub type TraceKey = [u8; 16];

/// The key of a stored trace id (32 lowercase or uppercase hex characters); `None` for
/// anything else (stored spans always have one).
pub fn trace_key(trace_id: &str) -> Option<TraceKey> {
    let bytes = trace_id.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        key[i] = (hi * 16 + lo) as u8;
    }
    Some(key)
}

/// Where one trace's spans start: the earliest and latest span start seen for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub trace: TraceKey,
    pub first_start_us: i64,
    pub last_start_us: i64,
}

impl Entry {
    /// Widens `self` to cover `other` (same trace).
    pub fn absorb(&mut self, other: &Entry) {
        self.first_start_us = self.first_start_us.min(other.first_start_us);
        self.last_start_us = self.last_start_us.max(other.last_start_us);
    }
}

/// Sorts entries by trace id and merges those of the same trace.
pub fn normalize(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_unstable_by_key(|e| e.trace);
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    for e in entries {
        match out.last_mut() {
            Some(last) if last.trace == e.trace => last.absorb(&e),
            _ => out.push(e),
        }
    }
    out
}

/// Encodes entries that [`normalize`] returned.
pub fn encode(entries: &[Entry]) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER + entries.len() * ENTRY + TRAILER);
    buf.put_slice(MAGIC);
    buf.put_u64_le(entries.len() as u64);
    for e in entries {
        buf.put_slice(&e.trace);
        buf.put_i64_le(e.first_start_us);
        buf.put_i64_le(e.last_start_us);
    }
    let crc = crc32fast::hash(&buf);
    buf.put_u32_le(crc);
    buf.freeze()
}

/// Decodes an index file; the error says what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    if bytes.len() < HEADER + TRAILER || &bytes[..8] != MAGIC {
        return Err("not a trace-index file (bad magic or too short)".into());
    }
    let count = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| "short header")?);
    let body = bytes.len() - HEADER - TRAILER;
    if count.checked_mul(ENTRY as u64) != Some(body as u64) {
        return Err(format!("{count} entries announced, {body} bytes of entries present"));
    }
    let (content, trailer) = bytes.split_at(bytes.len() - TRAILER);
    let stored = u32::from_le_bytes(trailer.try_into().map_err(|_| "short trailer")?);
    if crc32fast::hash(content) != stored {
        return Err("checksum mismatch".into());
    }
    let mut entries = Vec::with_capacity(count as usize);
    for chunk in content[HEADER..].chunks_exact(ENTRY) {
        let field = |range: std::ops::Range<usize>| -> [u8; 8] { chunk[range].try_into().unwrap_or([0; 8]) };
        let mut trace = [0u8; 16];
        trace.copy_from_slice(&chunk[..16]);
        let entry = Entry {
            trace,
            first_start_us: i64::from_le_bytes(field(16..24)),
            last_start_us: i64::from_le_bytes(field(24..32)),
        };
        if entries.last().is_some_and(|last: &Entry| last.trace >= entry.trace) {
            return Err("entries are not sorted by trace id".into());
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// The entry of `trace` in sorted `entries`.
pub fn find(entries: &[Entry], trace: &TraceKey) -> Option<Entry> {
    entries.binary_search_by(|e| e.trace.cmp(trace)).ok().map(|i| entries[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(first: u8, a: i64, b: i64) -> Entry {
        let mut trace = [0u8; 16];
        trace[0] = first;
        Entry { trace, first_start_us: a, last_start_us: b }
    }

    #[test]
    fn round_trip_and_lookup() {
        let entries = normalize(vec![entry(9, 5, 5), entry(1, 10, 20), entry(9, 1, 3), entry(4, 7, 7)]);
        assert_eq!(entries, vec![entry(1, 10, 20), entry(4, 7, 7), entry(9, 1, 5)]);
        let bytes = encode(&entries);
        assert_eq!(bytes.len(), 16 + 3 * 32 + 4);
        let decoded = decode(&bytes).expect("decodes");
        assert_eq!(decoded, entries);
        assert_eq!(find(&decoded, &entry(9, 0, 0).trace), Some(entry(9, 1, 5)));
        assert_eq!(find(&decoded, &entry(2, 0, 0).trace), None);
        assert_eq!(decode(&encode(&[])).expect("empty"), vec![]);
    }

    #[test]
    fn damaged_files_are_refused_with_a_reason() {
        let bytes = encode(&normalize(vec![entry(1, 1, 2), entry(2, 3, 4)])).to_vec();
        assert!(decode(b"nope").unwrap_err().contains("magic"));
        assert!(decode(&bytes[..bytes.len() - 5]).unwrap_err().contains("announced"));
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
        // Any bytes at all: an error or entries, never a panic.
        for len in 0..bytes.len() {
            let _ = decode(&bytes[..len]);
        }
    }

    #[test]
    fn trace_keys_are_the_hex_bytes() {
        let key = trace_key("4bf92f3577b34da6a3ce929d0e0e4736").expect("key");
        assert_eq!(key[0], 0x4b);
        assert_eq!(key[15], 0x36);
        assert_eq!(trace_key("4BF92F3577B34DA6A3CE929D0E0E4736"), Some(key));
        assert_eq!(trace_key("xyz"), None);
        assert_eq!(trace_key("zzf92f3577b34da6a3ce929d0e0e4736"), None);
    }
}
