//! The byte-pair merge: a piece's bytes start as one token each, and the adjacent pair with the
//! lowest merge rank (leftmost on ties) is merged until no pair has a rank, as `tokenizers`' BPE
//! model does.
//!
//! Three paths give the same ids: [`Bpe::merge_reference`], the plain loop; a scan over a small
//! array for short pieces, with the pair ranks cached beside the parts (tiktoken's approach); and
//! a heap over a linked list for long pieces, where the scan's quadratic cost would show. Before
//! any of them, a piece that is itself a token which the merges rebuild whole is answered by one
//! hash lookup: most English words.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::vocab::Index;

const NO_RANK: u32 = u32::MAX;
/// Marks a byte the vocabulary has no token for.
const NO_ID: u32 = u32::MAX;
/// Pieces longer than this (in bytes) take the heap path.
const SCAN_MAX: usize = 48;

#[inline(always)]
fn key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

#[derive(Debug, Clone)]
pub(crate) struct Bpe {
    /// Token of each single byte.
    byte_ids: [u32; 256],
    /// Emitted for a byte with no token (`model.unk_token`); such bytes vanish without one.
    unk: Option<u32>,
    /// (left, right) -> merge rank.
    ranks: FxHashMap<u64, u32>,
    /// Merge rank -> the merged token.
    merged: Vec<u32>,
    /// The bytes each id decodes to: id `i`'s are `bytes[offsets[i]..offsets[i + 1]]` (none
    /// for an id the vocabulary lacks).
    bytes: Vec<u8>,
    offsets: Vec<u32>,
    /// Ids whose bytes, taken as a piece, come out as that single id, keyed by those bytes.
    whole: Index,
}

/// One token of a piece being merged, with the rank of the pair it starts.
#[derive(Clone, Copy)]
struct Part {
    id: u32,
    rank: u32,
}

impl Bpe {
    /// `merges` holds (left, right, merged) ids in rank order; `bytes` and `offsets` what each
    /// id decodes to. `candidates` lists the ids spelled in the byte alphabet, to find those that
    /// are answered whole; with `ignore_merges` (a `tokenizers` option) every one of them is.
    pub(crate) fn new(
        byte_ids: [u32; 256],
        unk: Option<u32>,
        merges: &[(u32, u32, u32)],
        (bytes, offsets): (Vec<u8>, Vec<u32>),
        candidates: &[u32],
        ignore_merges: bool,
    ) -> Bpe {
        let mut ranks = FxHashMap::default();
        ranks.reserve(merges.len());
        let mut merged = Vec::with_capacity(merges.len());
        for (rank, &(l, r, m)) in merges.iter().enumerate() {
            // A repeated pair takes its last rank, as `tokenizers` collecting into a map does.
            ranks.insert(key(l, r), rank as u32);
            merged.push(m);
        }
        let mut bpe = Bpe {
            byte_ids,
            unk,
            ranks,
            merged,
            bytes,
            offsets,
            whole: Index::default(),
        };
        // Checking every token costs one merge each (~50k for GPT-2): spread over the cores.
        let kept: Vec<u32> = candidates
            .par_iter()
            .filter(|&&id| bpe.token_bytes(id).len() >= 2)
            .map_init(
                || (Vec::new(), Vec::new()),
                |(out, parts), &id| {
                    out.clear();
                    if !ignore_merges {
                        bpe.merge(bpe.token_bytes(id), out, parts);
                    }
                    (ignore_merges || out[..] == [id]).then_some(id)
                },
            )
            .flatten()
            .collect();
        let mut whole = Index::with_capacity(kept.len());
        for &id in &kept {
            let (start, end) = (bpe.offsets[id as usize], bpe.offsets[id as usize + 1]);
            let len = (end - start) as usize;
            whole.insert(&bpe.bytes, start as usize, len, id);
        }
        bpe.whole = whole;
        bpe
    }

    /// The bytes id `id` decodes to (empty for an id the vocabulary lacks).
    #[inline]
    pub(crate) fn token_bytes(&self, id: u32) -> &[u8] {
        match (
            self.offsets.get(id as usize),
            self.offsets.get(id as usize + 1),
        ) {
            (Some(&a), Some(&b)) => &self.bytes[a as usize..b as usize],
            _ => &[],
        }
    }

    pub(crate) fn num_merges(&self) -> usize {
        self.merged.len()
    }

    #[inline(always)]
    fn rank(&self, left: u32, right: u32) -> u32 {
        *self.ranks.get(&key(left, right)).unwrap_or(&NO_RANK)
    }

    #[inline(always)]
    fn push_byte(&self, b: u8, out: &mut Vec<u32>) {
        match self.byte_ids[b as usize] {
            NO_ID => out.extend(self.unk),
            id => out.push(id),
        }
    }

    /// Appends the tokens of one piece (the fast path).
    #[inline]
    pub(crate) fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>, parts: &mut Vec<u32>) {
        if let [b] = piece {
            self.push_byte(*b, out);
        } else if let Some(id) = self.whole.get(piece, &self.bytes) {
            out.push(id);
        } else {
            self.merge(piece, out, parts);
        }
    }

    /// The merge proper, without the whole-token shortcut.
    fn merge(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Vec<u32>) {
        if piece.len() <= SCAN_MAX {
            self.merge_scan(piece, out);
        } else {
            self.merge_heap(piece, out, scratch);
        }
    }

    /// The first tokens of a piece: one per byte. A byte without a token becomes `unk`, or is
    /// dropped (its neighbours then meet), as in `tokenizers`.
    #[inline(always)]
    fn initial<'a>(&'a self, piece: &'a [u8]) -> impl Iterator<Item = u32> + 'a {
        piece
            .iter()
            .filter_map(|&b| match self.byte_ids[b as usize] {
                NO_ID => self.unk,
                id => Some(id),
            })
    }

    fn merge_scan(&self, piece: &[u8], out: &mut Vec<u32>) {
        let mut buf = [Part {
            id: 0,
            rank: NO_RANK,
        }; SCAN_MAX];
        let mut n = 0;
        for id in self.initial(piece) {
            buf[n] = Part { id, rank: NO_RANK };
            n += 1;
        }
        self.finish_scan(&mut buf[..n], out);
    }

    #[inline]
    fn finish_scan(&self, parts: &mut [Part], out: &mut Vec<u32>) {
        let mut n = parts.len();
        if n == 0 {
            return;
        }
        for i in 0..n - 1 {
            parts[i].rank = self.rank(parts[i].id, parts[i + 1].id);
        }
        parts[n - 1].rank = NO_RANK;
        loop {
            let mut best = NO_RANK;
            let mut at = 0;
            for (i, p) in parts[..n - 1].iter().enumerate() {
                if p.rank < best {
                    best = p.rank;
                    at = i;
                }
            }
            if best == NO_RANK {
                break;
            }
            parts[at].id = self.merged[best as usize];
            parts.copy_within(at + 2..n, at + 1);
            n -= 1;
            parts[at].rank = if at + 1 < n {
                self.rank(parts[at].id, parts[at + 1].id)
            } else {
                NO_RANK
            };
            if at > 0 {
                parts[at - 1].rank = self.rank(parts[at - 1].id, parts[at].id);
            }
        }
        out.extend(parts[..n].iter().map(|p| p.id));
    }

    /// O(n log n) merge for long pieces: symbols in a linked list, candidate pairs in a heap
    /// keyed by (rank, position), stale entries skipped when popped.
    fn merge_heap(&self, piece: &[u8], out: &mut Vec<u32>, ids: &mut Vec<u32>) {
        const NONE: u32 = u32::MAX;
        ids.clear();
        ids.extend(self.initial(piece));
        let n = ids.len();
        if n == 0 {
            return;
        }
        let mut next: Vec<u32> = (1..=n as u32).collect();
        next[n - 1] = NONE;
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            let r = self.rank(ids[i], ids[i + 1]);
            if r != NO_RANK {
                heap.push(Reverse((r, i as u32)));
            }
        }
        while let Some(Reverse((r, i))) = heap.pop() {
            let i = i as usize;
            if !alive[i] || next[i] == NONE {
                continue;
            }
            let j = next[i] as usize;
            if self.rank(ids[i], ids[j]) != r {
                continue;
            }
            ids[i] = self.merged[r as usize];
            alive[j] = false;
            next[i] = next[j];
            if next[j] != NONE {
                prev[next[j] as usize] = i as u32;
                let k = next[j] as usize;
                let rk = self.rank(ids[i], ids[k]);
                if rk != NO_RANK {
                    heap.push(Reverse((rk, i as u32)));
                }
            }
            if prev[i] != NONE {
                let p = prev[i] as usize;
                let rp = self.rank(ids[p], ids[i]);
                if rp != NO_RANK {
                    heap.push(Reverse((rp, p as u32)));
                }
            }
        }
        let mut i = 0;
        loop {
            out.push(ids[i]);
            if next[i] == NONE {
                break;
            }
            i = next[i] as usize;
        }
    }

    /// The plain merge loop: find the lowest-ranked adjacent pair, merge it, repeat.
    pub(crate) fn merge_reference(&self, piece: &[u8]) -> Vec<u32> {
        let mut ids: Vec<u32> = self.initial(piece).collect();
        while let Some((_, i, m)) = ids
            .windows(2)
            .enumerate()
            .filter_map(|(i, w)| {
                let r = self.rank(w[0], w[1]);
                (r != NO_RANK).then(|| (r, i, self.merged[r as usize]))
            })
            .min()
        {
            ids[i] = m;
            ids.remove(i + 1);
        }
        ids
    }

    /// The fast path on a piece, allocating (for tests).
    pub(crate) fn merge_fast(&self, piece: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_piece(piece, &mut out, &mut Vec::new());
        out
    }

    /// The heap path whatever the length (for tests).
    pub(crate) fn merge_heap_only(&self, piece: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        self.merge_heap(piece, &mut out, &mut Vec::new());
        out
    }
}
