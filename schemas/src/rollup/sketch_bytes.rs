//! The stored bytes of a quantile sketch: written without the summary statistics, and read
//! without building a sketch when only one quantile of one sketch is wanted.
//!
//! A roll-up row stores its sketch in DataDog's binary format as Java's `DDSketch.encode()`
//! writes it: the index mapping, the zero count and the bins. The summary statistics that
//! `DDSketchWithExactSummaryStatistics` adds in front (count, min, max, sum: 26 bytes that
//! barely compress) are left out, because the row's own columns hold them exactly.
//!
//! A dashboard asks one quantile of most stored sketches on their own (one row per series
//! and bucket once compaction folded the late corrections), so [`SketchReader::quantile`]
//! answers it from the bytes: the bins are read into a reused buffer and walked, with no
//! allocation per sketch. It returns exactly what `DDSketch::quantile` returns for the
//! decoded sketch (tested on random sketches), and falls back to decoding the sketch where
//! the decoder would collapse bins.

use arrow::error::ArrowError;
use sketches_ddsketch::DDSketch;

use super::decode_sketch;

const FLAG_INDEX_MAPPING_LOG: u8 = 0x02;
const FLAG_ZERO_COUNT: u8 = 0x04;
const FLAG_COUNT: u8 = 0xA0;
const FLAG_SUM: u8 = 0x84;
const FLAG_MIN: u8 = 0x88;
const FLAG_MAX: u8 = 0x8C;
/// The low two bits of a flag byte: its type.
const TYPE_FEATURES: u8 = 0;
const TYPE_POSITIVE_STORE: u8 = 1;
const TYPE_INDEX_MAPPING: u8 = 2;
const TYPE_NEGATIVE_STORE: u8 = 3;
/// Bins a decoded store holds before it collapses the lowest ones (the decoder's limit);
/// sketches whose keys span more are read by decoding them.
const MAX_SPAN_READ_IN_PLACE: i64 = 1024;

/// The stored form of a sketch: DataDog's binary encoding without the summary statistics.
pub fn encode_sketch(sketch: &DDSketch) -> Vec<u8> {
    let mut bytes = sketch.to_java_bytes();
    let mut input = bytes.as_slice();
    // `to_java_bytes` writes the summary statistics first; skip them.
    loop {
        match input.first() {
            Some(&FLAG_COUNT) => {
                input = &input[1..];
                if decode_var_double(&mut input).is_err() {
                    return bytes;
                }
            }
            Some(&(FLAG_SUM | FLAG_MIN | FLAG_MAX)) if input.len() > 8 => input = &input[9..],
            _ => break,
        }
    }
    let skipped = bytes.len() - input.len();
    bytes.drain(..skipped);
    bytes
}

/// Reads single quantiles of stored sketches, reusing its buffers from one to the next.
#[derive(Debug, Default)]
pub struct SketchReader {
    positive: Vec<(i32, u64)>,
    negative: Vec<(i32, u64)>,
}

impl SketchReader {
    /// The `q` quantile of the stored sketch `bytes`: what `decode_sketch(bytes)?.quantile(q)`
    /// returns, without decoding it.
    pub fn quantile(&mut self, bytes: &[u8], q: f64) -> Result<Option<f64>, ArrowError> {
        if !(0.0..=1.0).contains(&q) {
            return Err(ArrowError::InvalidArgumentError(format!("quantile {q} is outside [0, 1]")));
        }
        let Some(read) = self.read(bytes)? else {
            return decode_sketch(bytes)?.quantile(q).map_err(|e| ArrowError::ComputeError(e.to_string()));
        };
        let (positive, negative) = (count_of(&self.positive), count_of(&self.negative));
        let total = positive + read.zero_count + negative;
        if total == 0 {
            return Ok(None);
        }
        if q == 0.0 {
            return Ok(Some(read.min));
        }
        if q == 1.0 {
            return Ok(Some(read.max));
        }
        let gamma_ln = read.gamma.ln();
        let value = |key: i32| ((key as f64) * gamma_ln).exp() * (2.0 * read.gamma / (1.0 + read.gamma));
        let rank = (q * (total as f64 - 1.0)) as u64;
        Ok(Some(if rank < negative {
            -value(key_at_rank(&mut self.negative, negative - rank - 1))
        } else if rank < read.zero_count + negative {
            0.0
        } else {
            value(key_at_rank(&mut self.positive, rank - read.zero_count - negative))
        }))
    }

    /// Parses `bytes` into the bin buffers; `None` where the decoder would collapse bins or
    /// the mapping is not stored (the caller decodes instead).
    fn read(&mut self, bytes: &[u8]) -> Result<Option<Header>, ArrowError> {
        self.positive.clear();
        self.negative.clear();
        if bytes.is_empty() {
            return Err(invalid("empty"));
        }
        let mut input = bytes;
        // The decoder's optional version prefix.
        if input.len() >= 2 && input[0] == FLAG_INDEX_MAPPING_LOG && is_valid_flag_byte(input[1]) {
            input = &input[1..];
        }
        let mut header = Header { gamma: f64::NAN, zero_count: 0, min: f64::INFINITY, max: f64::NEG_INFINITY };
        let mut zero_count = 0.0;
        while let Some((&flag, rest)) = input.split_first() {
            input = rest;
            match flag & 3 {
                TYPE_INDEX_MAPPING => {
                    header.gamma = read_f64_le(&mut input)?;
                    read_f64_le(&mut input)?;
                }
                TYPE_FEATURES => match flag {
                    FLAG_ZERO_COUNT => zero_count += decode_var_double(&mut input)?,
                    FLAG_COUNT => {
                        decode_var_double(&mut input)?;
                    }
                    FLAG_SUM => {
                        read_f64_le(&mut input)?;
                    }
                    FLAG_MIN => header.min = read_f64_le(&mut input)?,
                    FLAG_MAX => header.max = read_f64_le(&mut input)?,
                    _ => return Err(invalid(&format!("flag 0x{flag:02X}"))),
                },
                TYPE_POSITIVE_STORE => read_store(&mut input, flag >> 2, &mut self.positive)?,
                TYPE_NEGATIVE_STORE => read_store(&mut input, flag >> 2, &mut self.negative)?,
                _ => unreachable!("two bits"),
            }
        }
        header.zero_count = zero_count as u64;
        if header.gamma.is_nan() || !in_place(&mut self.positive) || !in_place(&mut self.negative) {
            return Ok(None);
        }
        Ok(Some(header))
    }
}

struct Header {
    gamma: f64,
    zero_count: u64,
    min: f64,
    max: f64,
}

fn count_of(bins: &[(i32, u64)]) -> u64 {
    bins.iter().map(|(_, n)| n).sum()
}

/// Sorts the bins by key; false when their keys span more than is read in place.
fn in_place(bins: &mut [(i32, u64)]) -> bool {
    if !bins.is_sorted_by_key(|(k, _)| *k) {
        bins.sort_unstable_by_key(|(k, _)| *k);
    }
    match (bins.first(), bins.last()) {
        (Some((low, _)), Some((high, _))) => i64::from(*high) - i64::from(*low) < MAX_SPAN_READ_IN_PLACE,
        _ => true,
    }
}

/// The key of the first bin (ascending keys) whose cumulative count passes `rank`.
fn key_at_rank(bins: &mut [(i32, u64)], rank: u64) -> i32 {
    let mut n = 0;
    for (key, count) in bins.iter() {
        n += count;
        if n > rank {
            return *key;
        }
    }
    bins.last().map_or(0, |(k, _)| *k)
}

fn read_store(input: &mut &[u8], mode: u8, bins: &mut Vec<(i32, u64)>) -> Result<(), ArrowError> {
    let n = decode_unsigned_var_long(input)?;
    match mode {
        // Index deltas and counts; index deltas (count 1 each).
        1 | 2 => {
            let mut index: i64 = 0;
            for _ in 0..n {
                index += decode_signed_var_long(input)?;
                let count = if mode == 1 { decode_var_double(input)? as u64 } else { 1 };
                bins.push((index as i32, count));
            }
        }
        // Contiguous counts.
        3 => {
            let mut index = decode_signed_var_long(input)?;
            let delta = decode_signed_var_long(input)?;
            for _ in 0..n {
                bins.push((index as i32, decode_var_double(input)? as u64));
                index += delta;
            }
        }
        _ => return Err(invalid(&format!("bin encoding {mode}"))),
    }
    Ok(())
}

fn is_valid_flag_byte(b: u8) -> bool {
    if matches!(b, FLAG_ZERO_COUNT | FLAG_COUNT | FLAG_SUM | FLAG_MIN | FLAG_MAX | FLAG_INDEX_MAPPING_LOG) {
        return true;
    }
    let subflag = b >> 2;
    match b & 3 {
        TYPE_POSITIVE_STORE | TYPE_NEGATIVE_STORE => (1..=3).contains(&subflag),
        TYPE_INDEX_MAPPING => subflag <= 4,
        _ => false,
    }
}

fn invalid(what: &str) -> ArrowError {
    ArrowError::ParseError(format!("invalid sketch: {what}"))
}

fn read_byte(input: &mut &[u8]) -> Result<u8, ArrowError> {
    let (&byte, rest) = input.split_first().ok_or_else(|| invalid("unexpected end"))?;
    *input = rest;
    Ok(byte)
}

fn read_f64_le(input: &mut &[u8]) -> Result<f64, ArrowError> {
    let (bytes, rest) = input.split_first_chunk::<8>().ok_or_else(|| invalid("unexpected end"))?;
    *input = rest;
    Ok(f64::from_le_bytes(*bytes))
}

fn decode_unsigned_var_long(input: &mut &[u8]) -> Result<u64, ArrowError> {
    let (mut value, mut shift) = (0u64, 0u32);
    loop {
        let next = read_byte(input)?;
        if next < 0x80 || shift == 56 {
            return Ok(value | (u64::from(next) << shift));
        }
        value |= (u64::from(next) & 0x7F) << shift;
        shift += 7;
    }
}

fn decode_signed_var_long(input: &mut &[u8]) -> Result<i64, ArrowError> {
    let encoded = decode_unsigned_var_long(input)?;
    Ok(((encoded >> 1) as i64) ^ -((encoded & 1) as i64))
}

fn decode_var_double(input: &mut &[u8]) -> Result<f64, ArrowError> {
    let (mut bits, mut shift) = (0u64, 57i32);
    loop {
        let next = read_byte(input)?;
        if shift == 1 {
            bits |= u64::from(next);
            break;
        }
        if next < 0x80 {
            bits |= u64::from(next) << shift;
            break;
        }
        bits |= (u64::from(next) & 0x7F) << shift;
        shift -= 7;
    }
    Ok(f64::from_bits(bits.rotate_right(6).wrapping_add(1.0f64.to_bits())) - 1.0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::rollup::new_sketch;

    fn sketch_of(values: &[f64]) -> DDSketch {
        let mut s = new_sketch();
        for v in values {
            s.add(*v);
        }
        s
    }

    #[test]
    fn stored_sketches_leave_the_summary_statistics_to_the_row() {
        let s = sketch_of(&[12.5, 13.25, 99.0, 0.0, -4.0]);
        let full = s.to_java_bytes();
        let stored = encode_sketch(&s);
        assert_eq!(full.len() - stored.len(), 2 + 9 * 3, "count (var double 1 byte here), min, max, sum dropped");
        assert_eq!(stored[0], FLAG_INDEX_MAPPING_LOG);
        let back = decode_sketch(&stored).expect("decode");
        for q in [0.01, 0.25, 0.5, 0.9, 0.95, 0.99] {
            assert_eq!(back.quantile(q).unwrap(), s.quantile(q).unwrap(), "q {q}");
        }
        assert_eq!(back.count(), s.count());
    }

    #[test]
    fn an_empty_sketch_has_no_quantile() {
        let stored = encode_sketch(&new_sketch());
        assert_eq!(SketchReader::default().quantile(&stored, 0.5).unwrap(), None);
    }

    #[test]
    fn bad_bytes_are_an_error_not_a_panic() {
        let mut reader = SketchReader::default();
        for bytes in [&[][..], &[0x02, 1, 2], &[0xFF, 0xFF], &[0x05, 0x80]] {
            assert!(reader.quantile(bytes, 0.5).is_err(), "{bytes:?}");
        }
        assert!(reader.quantile(&encode_sketch(&sketch_of(&[1.0])), 1.5).is_err());
    }

    proptest! {
        /// Read in place, every quantile is exactly the decoded sketch's, in both stored
        /// forms (with and without the summary statistics), including keys spread wider than
        /// is read in place (decoded instead).
        #[test]
        fn quantiles_read_in_place_equal_the_decoded_sketch(
            values in prop::collection::vec(prop_oneof![
                -1.0e4..1.0e4f64, Just(0.0), 0.001..10.0f64, 1.0e-8..1.0e12f64,
            ], 0..200),
            q in 0.0..=1.0f64,
        ) {
            let s = sketch_of(&values);
            let mut reader = SketchReader::default();
            for bytes in [s.to_java_bytes(), encode_sketch(&s)] {
                let decoded = decode_sketch(&bytes).unwrap();
                for q in [q, 0.5, 0.9, 0.95, 0.99] {
                    let expected = decoded.quantile(q).unwrap();
                    let got = reader.quantile(&bytes, q).unwrap();
                    prop_assert_eq!(got.map(f64::to_bits), expected.map(f64::to_bits), "q {}", q);
                }
            }
        }
    }
}
