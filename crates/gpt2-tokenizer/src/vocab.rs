//! The vocabulary's strings, interned: every token's text in one buffer and an open-addressing
//! table of entry numbers keyed by that text. A map of owned strings (and a second table of them
//! by id) held two or three heap allocations per token: GPT-2's tokenizer took 12 MB live and
//! left 26 MB resident after loading; this takes a third of that.

use std::hash::Hasher;

use rustc_hash::FxHasher;

/// Marks an id the vocabulary has no token for.
const NONE: u32 = u32::MAX;

/// A byte string's hash, mixed so that both its low bits (the slot) and its high bits (the tag
/// kept in the slot) vary.
#[inline]
pub(crate) fn hash_bytes(key: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(key);
    // The finaliser of splitmix64.
    let mut x = h.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// Entries (`u32`s) keyed by byte strings that live in an arena beside the table: linear
/// probing, at most half full, each slot holding its key's place in the arena and a tag of its
/// hash, so a lookup is one hash, a probe or two and one comparison with the arena's bytes (an
/// id alone in the slot would cost another cache miss to find its bytes: 5% of encoding).
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    slots: Vec<Slot>,
    mask: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    tag: u32,
    /// The entry + 1; 0 marks an empty slot.
    entry: u32,
    start: u32,
    len: u32,
}

impl Index {
    pub(crate) fn with_capacity(n: usize) -> Index {
        let size = (2 * n).next_power_of_two().max(8);
        Index {
            slots: vec![Slot::default(); size],
            mask: size - 1,
        }
    }

    /// The slot holding `key`, or the empty slot where it would go.
    #[inline]
    fn find(&self, key: &[u8], h: u64, arena: &[u8]) -> usize {
        let tag = (h >> 32) as u32;
        let mut i = h as usize & self.mask;
        loop {
            let s = self.slots[i];
            if s.entry == 0
                || (s.tag == tag
                    && s.len as usize == key.len()
                    && arena[s.start as usize..][..key.len()] == *key)
            {
                return i;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Points the key at `arena[start..start + len]` to `entry`; the entry it pointed at before,
    /// if any. The table must have been made with room for every entry inserted.
    pub(crate) fn insert(
        &mut self,
        arena: &[u8],
        start: usize,
        len: usize,
        entry: u32,
    ) -> Option<u32> {
        let key = &arena[start..start + len];
        let h = hash_bytes(key);
        let i = self.find(key, h, arena);
        let old = self.slots[i].entry;
        self.slots[i] = Slot {
            tag: (h >> 32) as u32,
            entry: entry + 1,
            start: start as u32,
            len: len as u32,
        };
        old.checked_sub(1)
    }

    #[inline]
    pub(crate) fn get(&self, key: &[u8], arena: &[u8]) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        self.slots[self.find(key, hash_bytes(key), arena)]
            .entry
            .checked_sub(1)
    }
}

/// Token strings and ids both ways (`vocab.json`): what `FxHashMap<String, u32>` plus a
/// `Vec<Option<String>>` by id gave, in three flat buffers and one table.
#[derive(Debug, Clone, Default)]
pub(crate) struct Vocab {
    /// Every entry's text, concatenated; entry `e`'s is `text[starts[e]..starts[e + 1]]`.
    text: String,
    starts: Vec<u32>,
    /// Entry -> id.
    ids: Vec<u32>,
    /// Id -> entry ([`NONE`] for ids without a token).
    by_id: Vec<u32>,
    /// Text -> entry.
    index: Index,
    /// Distinct token strings.
    len: usize,
}

impl Vocab {
    /// From (token, id) pairs in file order. A token given twice keeps its last id, as a JSON
    /// object read into a map does; an id given twice is the token of its last string.
    pub(crate) fn new<S: AsRef<str>>(pairs: &[(S, u32)]) -> Vocab {
        let bytes = pairs.iter().map(|(t, _)| t.as_ref().len()).sum();
        let mut text = String::with_capacity(bytes);
        let mut starts = Vec::with_capacity(pairs.len() + 1);
        starts.push(0u32);
        for (t, _) in pairs {
            text.push_str(t.as_ref());
            starts.push(text.len() as u32);
        }
        let mut index = Index::with_capacity(pairs.len());
        let mut live = vec![true; pairs.len()];
        for e in 0..pairs.len() {
            let (start, end) = (starts[e] as usize, starts[e + 1] as usize);
            if let Some(old) = index.insert(text.as_bytes(), start, end - start, e as u32) {
                live[old as usize] = false;
            }
        }
        let ids: Vec<u32> = pairs.iter().map(|&(_, id)| id).collect();
        let n = ids.iter().map(|&id| id as usize + 1).max().unwrap_or(0);
        let mut by_id = vec![NONE; n];
        for (e, &id) in ids.iter().enumerate() {
            if live[e] {
                by_id[id as usize] = e as u32;
            }
        }
        let len = live.iter().filter(|&&l| l).count();
        Vocab {
            text,
            starts,
            ids,
            by_id,
            index,
            len,
        }
    }

    fn entry(&self, e: u32) -> &str {
        &self.text[self.starts[e as usize] as usize..self.starts[e as usize + 1] as usize]
    }

    /// The id of a token string.
    #[inline]
    pub(crate) fn get(&self, token: &str) -> Option<u32> {
        let e = self.index.get(token.as_bytes(), self.text.as_bytes())?;
        Some(self.ids[e as usize])
    }

    /// The token string of an id.
    pub(crate) fn token(&self, id: u32) -> Option<&str> {
        match *self.by_id.get(id as usize)? {
            NONE => None,
            e => Some(self.entry(e)),
        }
    }

    /// Distinct token strings (`len(vocab.json)`).
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustc_hash::FxHashMap;

    #[test]
    fn vocab_answers_as_maps_do() {
        // Colliding prefixes, an empty string, a gap in the ids, a repeated token (last id
        // wins), a repeated id (its last string is its token), enough entries to probe far.
        let mut pairs: Vec<(String, u32)> = (0..3000u32)
            .map(|i| (format!("t{}", i * 7 % 3001), i + 2 * (i / 1000)))
            .collect();
        pairs.push((String::new(), 9000));
        pairs.push(("t7".into(), 9001));
        pairs.push(("again".into(), 5));
        let vocab = Vocab::new(&pairs);
        let mut map = FxHashMap::default();
        for (t, id) in &pairs {
            map.insert(t.clone(), *id);
        }
        let mut by_id: FxHashMap<u32, String> = FxHashMap::default();
        for (t, id) in &pairs {
            if map[t] == *id {
                by_id.insert(*id, t.clone());
            }
        }
        assert_eq!(vocab.len(), map.len());
        for (t, id) in &map {
            assert_eq!(vocab.get(t), Some(*id), "{t:?}");
        }
        assert_eq!(vocab.get("nope"), None);
        assert_eq!(vocab.get("t"), None);
        for id in 0..=pairs.iter().map(|&(_, id)| id).max().unwrap() + 1 {
            assert_eq!(
                vocab.token(id),
                by_id.get(&id).map(String::as_str),
                "id {id}"
            );
        }
    }

    #[test]
    fn index_replaces_and_misses() {
        // Keys of 0, 4 and 8 bytes side by side in one arena, many of them repeated.
        let mut arena = Vec::new();
        let mut keys = Vec::new();
        for i in 0..100u32 {
            let key = i.to_le_bytes().repeat(i as usize % 3);
            keys.push((arena.len(), key.len()));
            arena.extend(key);
        }
        let mut index = Index::with_capacity(keys.len());
        let mut expect = FxHashMap::default();
        for (e, &(start, len)) in keys.iter().enumerate() {
            let old = index.insert(&arena, start, len, e as u32);
            let key = arena[start..start + len].to_vec();
            assert_eq!(old, expect.insert(key, e as u32), "entry {e}");
        }
        for (k, &e) in &expect {
            assert_eq!(index.get(k, &arena), Some(e));
        }
        assert_eq!(index.get(b"absent", &arena), None);
        assert_eq!(Index::default().get(b"", &arena), None);
    }
}
