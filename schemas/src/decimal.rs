//! Doubles that are exact decimals.
//!
//! Real metrics are mostly integers or decimals with 2–4 digits (latencies, ratios). A
//! double "is" the decimal `unscaled / 10^scale` when that quotient, computed the way every
//! reader computes it (`unscaled as f64 / 10^scale`, one correctly rounded division), gives
//! back the same bits. The cold tier stores such columns as Parquet decimals
//! ([`exact_unscaled`]); roll-ups add such values exactly ([`exact_sum`]), so a sum of
//! two-digit latencies is itself a two-digit decimal (`0.1 + 0.2` is `0.3`, not
//! `0.30000000000000004`) and does not depend on the order partials merge in.

/// Most digits after the point [`exact_sum`] keeps exact.
pub const SUM_SCALE: i8 = 4;
/// Unscaled values stay below this: exact in a double, far inside a Parquet INT64 decimal
/// of 18 digits.
pub const MAX_UNSCALED: f64 = 1e15;

/// `v` as an integer number of `10^-scale`, if `unscaled as f64 / 10^scale` gives back
/// exactly `v` (bit for bit: `-0.0`, `NaN` and infinities never do).
pub fn exact_unscaled(v: f64, scale: i8) -> Option<i64> {
    let m = 10f64.powi(i32::from(scale));
    let unscaled = (v * m).round();
    // (`NaN` fails the comparison.)
    if !(unscaled.abs() < MAX_UNSCALED) {
        return None;
    }
    // (Through the integer, as a reader has it: `-0.0` comes back as `0.0`.)
    let unscaled = unscaled as i64;
    ((unscaled as f64 / m).to_bits() == v.to_bits()).then_some(unscaled)
}

/// `a + b`, exactly when both are decimals of at most [`SUM_SCALE`] digits (the double
/// nearest the exact decimal sum, so the sum keeps their digits and any order of adding
/// gives the same bits); otherwise the float sum.
pub fn exact_sum(a: f64, b: f64) -> f64 {
    let m = 10f64.powi(i32::from(SUM_SCALE));
    match (exact_unscaled(a, SUM_SCALE), exact_unscaled(b, SUM_SCALE)) {
        (Some(x), Some(y)) if ((x + y) as f64).abs() < MAX_UNSCALED => (x + y) as f64 / m,
        _ => a + b,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn decimal_sums_are_exact_and_others_are_float_sums() {
        assert_eq!(0.1 + 0.2, 0.30000000000000004);
        assert_eq!(exact_sum(0.1, 0.2), 0.3);
        assert_eq!(exact_sum(12.34, 0.01), 12.35);
        assert_eq!(exact_sum(-1.5, 1.5), 0.0);
        assert_eq!(exact_sum(0.0, 7.0), 7.0);
        // Not decimals of four digits: the float sum, unchanged.
        assert_eq!(exact_sum(1.0 / 3.0, 0.1), 1.0 / 3.0 + 0.1);
        assert_eq!(exact_sum(0.12345, 0.1), 0.12345 + 0.1);
        assert_eq!(exact_sum(1e12, 0.5), 1e12 + 0.5);
        assert!(exact_sum(f64::NAN, 1.0).is_nan());
        assert_eq!(exact_sum(f64::INFINITY, 1.0), f64::INFINITY);
        assert_eq!(exact_unscaled(-0.0, 2), None);
        assert_eq!(exact_unscaled(2.5, 1), Some(25));
        assert_eq!(exact_unscaled(2.55, 1), None);
    }

    proptest! {
        /// Two-digit values summed in any order: the same bits, and those of the exact
        /// decimal sum, which is itself an exact two-digit decimal.
        #[test]
        fn two_digit_sums_are_exact_in_any_order(cents in prop::collection::vec(-10_000_000i64..10_000_000, 1..40)) {
            let values: Vec<f64> = cents.iter().map(|&c| c as f64 / 100.0).collect();
            let forward = values.iter().fold(0.0, |s, &v| exact_sum(s, v));
            let backward = values.iter().rev().fold(0.0, |s, &v| exact_sum(s, v));
            let pairs = values.chunks(2).map(|c| c.iter().fold(0.0, |s, &v| exact_sum(s, v))).fold(0.0, exact_sum);
            let exact = cents.iter().sum::<i64>() as f64 / 100.0;
            prop_assert_eq!(forward.to_bits(), exact.to_bits());
            prop_assert_eq!(backward.to_bits(), exact.to_bits());
            prop_assert_eq!(pairs.to_bits(), exact.to_bits());
            prop_assert!(exact_unscaled(forward, 2).is_some());
        }
    }
}
