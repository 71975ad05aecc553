//! torch.sort's order of a row of scores, the order top-p, min-p and typical sampling cut along
//! (stable: equal values keep their index order; NaN last ascending and first descending), and
//! torch.topk's k-th largest value, top-k's threshold.
//!
//! A sampling step does these over a vocabulary's worth of floats per row. A comparison sort of
//! gpt2's 50257 took ~1.8 ms, more than a whole q4 decode step; [`argsort_into`] sorts integer keys
//! by their bits instead (four counting passes, ~0.45 ms), and [`kth_largest`] selects among
//! the few scores that can be among the k largest. Each keeps its plain reference beside it,
//! which the tests hold it to.

use std::cmp::Ordering;

use crate::model::matvec::lanes;

/// Ascending order with NaN last, as torch.sort puts it.
pub(crate) fn cmp_nan_last(a: f32, b: f32) -> Ordering {
    a.partial_cmp(&b)
        .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
}

/// The plain comparison sort (the reference [`argsort_into`] must agree with). Stable: torch.sort
/// (stable=False) on CPU gives the same order for ties (its CPU sort is stable either way),
/// which decides which of two tied tokens top_p / min_p / typical_p cut when the cut falls
/// between them.
#[cfg(test)]
pub(crate) fn argsort_reference(row: &[f32], descending: bool) -> Vec<usize> {
    let mut order = Vec::new();
    comparison_sort_into(row, descending, &mut order);
    order
}

/// [`argsort_reference`] into `order`: what [`argsort_into`] does for short rows (a row under
/// [`SMALL`] sorts on the stack's scratch, no allocation).
fn comparison_sort_into(row: &[f32], descending: bool, order: &mut Vec<usize>) {
    order.clear();
    order.extend(0..row.len());
    if descending {
        order.sort_by(|&a, &b| cmp_nan_last(row[b], row[a]));
    } else {
        order.sort_by(|&a, &b| cmp_nan_last(row[a], row[b]));
    }
}

/// The k-th largest value of `row` (`torch.topk(row, k)[0][-1]`, NaN above everything), k
/// clamped to 1..=len, selected in a copy of the row: the reference for [`kth_largest`] (which
/// selects the same way, in fewer scores).
#[cfg(test)]
pub(crate) fn kth_largest_reference(row: &[f32], k: usize) -> f32 {
    let k = k.clamp(1, row.len());
    let mut v = row.to_vec();
    select_kth(&mut v, k)
}

/// Reorders `v` so its k-th largest is at k - 1, and returns it.
fn select_kth(v: &mut [f32], k: usize) -> f32 {
    v.select_nth_unstable_by(k - 1, |a, b| cmp_nan_last(*b, *a));
    v[k - 1]
}

thread_local! {
    /// [`kth_largest`]'s copy of the scores it selects among, reused from step to step.
    static CANDIDATES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`kth_largest_reference`]'s value, selected among fewer scores: the largest of each of k
/// slices of the row are k of its scores, so the k-th largest is at least their least, and only
/// scores that high can be among the k largest (a few hundred of gpt2's 50257 logits for a
/// top_k of 50, where the copy and selection of them all cost ~0.13 ms a row).
pub(crate) fn kth_largest(row: &[f32], k: usize) -> f32 {
    let k = k.clamp(1, row.len());
    CANDIDATES.with_borrow_mut(|high| {
        high.clear();
        // f32::max passes NaNs over, so a row with any is selected in whole.
        if row.len() < 64 * k || row.iter().any(|x| x.is_nan()) {
            high.extend_from_slice(row);
        } else {
            let floor = row
                .chunks(row.len() / k)
                .take(k)
                .map(|c| lanes(c, f32::NEG_INFINITY, f32::max))
                .fold(f32::INFINITY, f32::min);
            high.extend(row.iter().copied().filter(|&x| x >= floor));
        }
        select_kth(high, k)
    })
}

/// A key whose unsigned order is [`cmp_nan_last`]'s: negative floats' bits flipped so they
/// count down, positives' sign bit set so they sit above; -0.0 is 0.0 (they compare equal, so
/// a stable sort keeps them in index order), and every NaN is the largest key.
fn key(x: f32) -> u32 {
    if x.is_nan() {
        return u32::MAX;
    }
    let bits = if x == 0.0 { 0 } else { x.to_bits() };
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    }
}

/// Rows shorter than this go through the comparison sort: the counting passes' fixed cost
/// (four 256-entry histograms and a second buffer) is more than sorting them.
const SMALL: usize = 512;

/// [`argsort_into`] into a new Vec (the tests' form).
#[cfg(test)]
pub(crate) fn argsort(row: &[f32], descending: bool) -> Vec<usize> {
    let mut order = Vec::new();
    argsort_into(row, descending, &mut order);
    order
}

thread_local! {
    /// [`argsort_into`]'s (key, index) pairs and their second buffer, reused from step to step.
    static PAIRS: std::cell::RefCell<(Vec<u64>, Vec<u64>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Indices that sort `row` ascending (or descending) into `order` (cleared first), exactly as
/// [`argsort_reference`]: a least-significant-digit radix sort of (key, index) pairs packed in
/// a u64, 8 bits of the key a pass (256 buckets keep the scatter's open lines within L1: ~0.42
/// ms for 50257 scores against ~0.47 with three passes of 2048). Each pass is stable, so ties
/// keep the index order the pairs start in; descending sorts the complemented keys, which turns
/// the order around but not the ties'. Nothing is allocated once the buffers are warm: a row
/// shorter than [`SMALL`] takes the comparison sort, on the stack's scratch.
pub(crate) fn argsort_into(row: &[f32], descending: bool, order: &mut Vec<usize>) {
    if row.len() < SMALL || row.len() > u32::MAX as usize {
        return comparison_sort_into(row, descending, order);
    }
    order.clear();
    const PASSES: [u32; 4] = [0, 8, 16, 24];
    let digit = |pair: u64, shift: u32| (pair >> (32 + shift)) as usize & 0xff;
    let flip = if descending { u32::MAX } else { 0 };
    PAIRS.with_borrow_mut(|(pairs, other)| {
        pairs.clear();
        pairs.extend(
            row.iter()
                .enumerate()
                .map(|(i, &x)| u64::from(key(x) ^ flip) << 32 | i as u64),
        );
        // Every pass's histogram in one read of the keys.
        let mut counts = [[0usize; 256]; 4];
        for &p in pairs.iter() {
            for (c, shift) in counts.iter_mut().zip(PASSES) {
                c[digit(p, shift)] += 1;
            }
        }
        other.resize(pairs.len(), 0);
        for (start, shift) in counts.iter_mut().zip(PASSES) {
            // A digit every key shares moves nothing (the high bits of scores often agree).
            if start.contains(&pairs.len()) {
                continue;
            }
            let mut sum = 0;
            for s in start.iter_mut() {
                (*s, sum) = (sum, sum + *s);
            }
            for &p in pairs.iter() {
                let at = &mut start[digit(p, shift)];
                other[*at] = p;
                *at += 1;
            }
            std::mem::swap(pairs, other);
        }
        order.extend(pairs.iter().map(|&p| p as u32 as usize));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Scores with the values a sort can trip on: ties, both zeros, infinities, NaNs of either
    /// sign, subnormals, and plain logits.
    fn score() -> impl Strategy<Value = f32> {
        prop_oneof![
            4 => -30f32..30.0,
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NAN),
            1 => Just(-f32::NAN),
            1 => Just(0.0f32),
            1 => Just(-0.0f32),
            1 => Just(f32::MIN_POSITIVE / 4.0),
            1 => Just(-f32::MIN_POSITIVE / 4.0),
            1 => (-3i32..3).prop_map(|v| v as f32),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn radix_order_is_the_comparison_sorts(
            row in prop::collection::vec(score(), SMALL..3 * SMALL),
            descending: bool,
        ) {
            prop_assert_eq!(argsort(&row, descending), argsort_reference(&row, descending));
        }
    }

    /// gpt2's width of scores, `levels` distinct values spread over -`half`..`half` (few
    /// levels: many exact ties), from a xorshift stream.
    fn vocabulary(seed: u64, levels: u64, half: f32) -> Vec<f32> {
        let mut s = seed;
        (0..50257)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s % levels) as f32 / levels as f32 * 2.0 - 1.0) * half
            })
            .collect()
    }

    #[test]
    fn a_vocabulary_of_logits_sorts_as_the_reference() {
        let row = vocabulary(0x2545_f491, 4000, 31.25);
        for descending in [false, true] {
            assert_eq!(
                argsort(&row, descending),
                argsort_reference(&row, descending)
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn kth_largest_of_the_high_scores_is_the_rows(
            // Mostly plain logits: a row with many infinities has them for its k largest.
            row in prop::collection::vec(
                prop_oneof![40 => (-300i32..300).prop_map(|v| v as f32 / 10.0), 1 => score()],
                1..3000,
            ),
            k in 1usize..40,
            with_nan: bool,
        ) {
            // Most rows without NaN, which the slices' maxima pass over.
            let row: Vec<f32> = if with_nan {
                row
            } else {
                row.into_iter().filter(|x| !x.is_nan()).collect()
            };
            prop_assume!(!row.is_empty());
            let (got, want) = (kth_largest(&row, k), kth_largest_reference(&row, k));
            // Either zero for a zero: they compare alike.
            prop_assert!(got == want || got.is_nan() && want.is_nan(), "{} {}", got, want);
        }
    }

    #[test]
    fn kth_largest_of_logits_is_the_selections() {
        let row = vocabulary(0x9e37_79b9, 100_000, 10.0);
        for k in [1, 2, 50, 500, 786] {
            assert_eq!(
                kth_largest(&row, k),
                kth_largest_reference(&row, k),
                "k {k}"
            );
        }
    }

    #[test]
    fn keys_follow_the_comparison() {
        let xs = [
            f32::NEG_INFINITY,
            -1e30,
            -1.0,
            -f32::MIN_POSITIVE / 4.0,
            0.0,
            f32::MIN_POSITIVE / 4.0,
            1.0,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{} {}", w[0], w[1]);
        }
        assert_eq!(key(-0.0), key(0.0));
        assert_eq!(key(-f32::NAN), key(f32::NAN));
        assert!(key(f32::INFINITY) < key(f32::NAN));
    }
}
