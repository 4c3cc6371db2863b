//! Token counts with OpenAI's `o200k_base`, exactly as tiktoken counts them, in about 4 MiB.
//!
//! tiktoken-rs holds the 200,000 tokens three times over (an encoder map, a decoder map and a
//! sorted copy, each token its own allocation): 41 MiB resident in every gateway, for a table
//! the gateway only ever asks "is this piece a token, and of what rank". Here the tokens are one
//! byte string compiled into the binary (written by `build.rs` from tiktoken-rs's own table), with
//! an offset per rank and an open-addressed index of ranks built at compile time too
//! (`o200k_index.rs`): 4.5 MiB, all of it the binary's read-only pages, which the kernel reads in
//! as lookups touch them and may drop again; nothing is built or allocated for it at start but the
//! split pattern. The split pattern and the byte-pair merge are tiktoken's (`vendor_tiktoken.rs`),
//! ported to count rather than encode; `tests::counts_match_tiktoken` holds the two to the same
//! answer.

use std::collections::BinaryHeap;
use std::sync::OnceLock;

use fancy_regex::Regex;

use crate::o200k_index::{slot_of, RANK_BITS, SLOTS};

/// Every ordinary token in rank order: a length byte, then the token's bytes.
static TABLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.bin"));
/// Where each rank's bytes start in [`TABLE`] (little-endian `u32`s); their length is the byte
/// before.
static STARTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_starts.bin"));
/// [`SLOTS`] little-endian `u32`s: rank + 1 of the token whose bytes hash to this slot (linear
/// probing) with its tag above [`RANK_BITS`], 0 for none.
static INDEX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_slots.bin"));

/// tiktoken's split pattern for `o200k_base` (`O200K_BASE_PAT_STR`).
const PATTERN: &str = concat!(
    r#"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"#,
    "|",
    r#"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"#,
    "|",
    r#"\p{N}{1,3}"#,
    "|",
    r#" ?[^\s\p{L}\p{N}]+[\r\n/]*"#,
    "|",
    r#"\s*[\r\n]+"#,
    "|",
    r#"\s+(?!\S)"#,
    "|",
    r#"\s+"#
);

/// No merge.
const NONE: u32 = u32::MAX;
/// Pieces this long or longer are merged with a heap (tiktoken's threshold): the plain merge is
/// quadratic in the piece's length, and one word of a hostile prompt can be megabytes.
const LARGE: usize = 100;

/// The table. [`O200k::get`] compiles the split pattern once per process (a few milliseconds);
/// the rest is in the binary.
pub struct O200k {
    split: Regex,
}

static LOADED: OnceLock<O200k> = OnceLock::new();

/// The `i`th little-endian `u32` of `words` (0 past the end).
fn word(words: &[u8], i: usize) -> u32 {
    words
        .get(i * 4..i * 4 + 4)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

impl O200k {
    /// The process's table, loaded on first use.
    pub fn get() -> &'static O200k {
        LOADED.get_or_init(|| O200k {
            split: compile(PATTERN),
        })
    }

    /// Ranks in the table, tokens or not.
    #[cfg(test)]
    fn ranks(&self) -> usize {
        STARTS.len() / 4
    }

    /// The bytes of a rank's token (empty if the rank has none).
    fn bytes(&self, rank: usize) -> &'static [u8] {
        let start = word(STARTS, rank) as usize;
        if start == 0 {
            return &[];
        }
        let len = TABLE.get(start - 1).map_or(0, |&l| usize::from(l));
        TABLE.get(start..start + len).unwrap_or(&[])
    }

    /// The rank of the token whose bytes are `piece`, if one is.
    fn rank(&self, piece: &[u8]) -> Option<u32> {
        let (mut slot, tag) = slot_of(piece);
        loop {
            let entry = word(INDEX, slot);
            if entry == 0 {
                return None;
            }
            if entry & !RANK_BITS == tag {
                let rank = (entry & RANK_BITS) - 1;
                if self.bytes(rank as usize) == piece {
                    return Some(rank);
                }
            }
            slot = (slot + 1) & (SLOTS - 1);
        }
    }

    fn rank_or_none(&self, piece: &[u8]) -> u32 {
        self.rank(piece).unwrap_or(NONE)
    }

    /// How many tokens `text` is, as tiktoken's `count_ordinary` (special tokens' text counted as
    /// ordinary text). Where the split pattern gives up (fancy-regex's backtracking limit, on
    /// pathological input; tiktoken panics there), the rest counts a token a byte: never fewer
    /// than the real count.
    pub fn count(&self, text: &str) -> usize {
        let mut tokens = 0;
        let mut done = 0;
        for piece in self.split.find_iter(text) {
            match piece {
                Ok(m) => {
                    tokens += self.piece(m.as_str().as_bytes());
                    done = m.end();
                }
                Err(_) => return tokens + (text.len() - done),
            }
        }
        tokens
    }

    /// Tokens of one piece of the split.
    fn piece(&self, piece: &[u8]) -> usize {
        if piece.len() <= 1 || self.rank(piece).is_some() {
            piece.len().min(1)
        } else if piece.len() < LARGE {
            self.merge(piece)
        } else {
            self.merge_large(piece)
        }
    }

    /// tiktoken's `_byte_pair_merge`, counting: the piece's byte pairs merged lowest rank first
    /// until no pair is a token. On the stack: pieces here are under [`LARGE`] bytes.
    fn merge(&self, piece: &[u8]) -> usize {
        // (start, rank of the pair starting there), one per byte plus the end.
        let mut parts = [(0usize, NONE); LARGE + 1];
        let mut len = 0;
        let mut min = (NONE, usize::MAX);
        for i in 0..piece.len() - 1 {
            let rank = self.rank_or_none(&piece[i..i + 2]);
            if rank < min.0 {
                min = (rank, i);
            }
            parts[len] = (i, rank);
            len += 1;
        }
        parts[len] = (piece.len() - 1, NONE);
        parts[len + 1] = (piece.len(), NONE);
        len += 2;

        let rank_at = |parts: &[(usize, u32)], len: usize, i: usize| {
            if i + 3 < len {
                self.rank_or_none(&piece[parts[i].0..parts[i + 3].0])
            } else {
                NONE
            }
        };
        while min.0 != NONE {
            let i = min.1;
            if i > 0 {
                parts[i - 1].1 = rank_at(&parts, len, i - 1);
            }
            parts[i].1 = rank_at(&parts, len, i);
            parts.copy_within(i + 2..len, i + 1);
            len -= 1;
            min = (NONE, usize::MAX);
            for (i, &(_, rank)) in parts[..len - 1].iter().enumerate() {
                if rank < min.0 {
                    min = (rank, i);
                }
            }
        }
        len - 1
    }

    /// tiktoken's `_byte_pair_merge_large`, counting: the same merges in the same order, found
    /// with a heap, in O(n log n).
    fn merge_large(&self, piece: &[u8]) -> usize {
        struct State {
            prev: usize,
            end: usize,
            next_end: usize,
            next_rank: u32,
        }
        let mut state = Vec::with_capacity(piece.len());
        state.push(State {
            prev: usize::MAX,
            end: 1,
            next_end: 2,
            next_rank: NONE,
        });
        let mut heap = BinaryHeap::with_capacity(piece.len());
        for i in 0..piece.len() - 1 {
            if let Some(rank) = self.rank(&piece[i..i + 2]) {
                heap.push(Merge { start: i, rank });
                state[i].next_rank = rank;
            }
            state.push(State {
                prev: i,
                end: i + 2,
                next_end: i + 3,
                next_rank: NONE,
            });
        }
        let potential = |state: &mut Vec<State>, heap: &mut BinaryHeap<Merge>, start: usize, next_end: usize| {
            state[start].next_end = next_end;
            state[start].next_rank = NONE;
            if next_end <= piece.len() {
                if let Some(rank) = self.rank(&piece[start..next_end]) {
                    heap.push(Merge { start, rank });
                    state[start].next_rank = rank;
                }
            }
        };
        while let Some(left) = heap.pop() {
            if left.rank == NONE {
                break;
            }
            if left.rank != state[left.start].next_rank {
                continue;
            }
            let left_start = left.start;
            let right_start = state[left_start].end;
            let right_end = state[left_start].next_end;
            let right_next_end = state[right_start].next_end;
            state[left_start].end = right_end;
            potential(&mut state, &mut heap, left_start, right_next_end);
            if right_end < state.len() {
                state[right_end].prev = left_start;
            }
            if left_start > 0 {
                let prev_start = state[left_start].prev;
                potential(&mut state, &mut heap, prev_start, right_end);
            }
            state[right_start].next_rank = NONE;
        }
        let mut tokens = 0;
        let mut i = 0;
        while i < state.len() {
            tokens += 1;
            i = state[i].end;
        }
        tokens
    }
}

/// A candidate merge in [`O200k::merge_large`]'s heap: lowest rank first, then leftmost.
#[derive(Eq, PartialEq)]
struct Merge {
    start: usize,
    rank: u32,
}

impl Ord for Merge {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.rank.cmp(&self.rank).then_with(|| other.start.cmp(&self.start))
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A piece's first slot, and the tag its entries carry: hash bits beyond the slot's, so that a
/// probe compares bytes only when the tags agree.
fn compile(pattern: &str) -> Regex {
    match Regex::new(pattern) {
        Ok(r) => r,
        // A constant pattern that tests compile: unreachable, and not worth a Result everywhere.
        Err(e) => unreachable!("o200k_base split pattern: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiktoken(text: &str) -> usize {
        tiktoken_rs::o200k_base_singleton().count_ordinary(text)
    }

    #[test]
    fn the_index_in_the_binary_is_the_one_its_table_gives() {
        let (starts, slots) = crate::o200k_index::build(TABLE);
        assert_eq!(starts.len(), STARTS.len() / 4);
        assert_eq!(slots.len(), SLOTS);
        assert!(starts.iter().enumerate().all(|(i, &w)| word(STARTS, i) == w));
        assert!(slots.iter().enumerate().all(|(i, &w)| word(INDEX, i) == w));
    }
    #[test]
    fn the_pattern_and_every_token_are_tiktokens() {
        assert_eq!(PATTERN, tiktoken_rs::O200K_BASE_PAT_STR);
        let ours = O200k::get();
        let theirs = tiktoken_rs::o200k_base_singleton();
        let mut tokens = 0;
        for rank in 0..ours.ranks() {
            let bytes = ours.bytes(rank);
            if bytes.is_empty() {
                continue;
            }
            tokens += 1;
            assert_eq!(
                theirs.decode_bytes(&[rank as u32]).ok().as_deref(),
                Some(bytes),
                "rank {rank}"
            );
            assert_eq!(ours.rank(bytes), Some(rank as u32), "rank {rank}");
        }
        assert_eq!(tokens, 199_998);
        assert_eq!(ours.rank(b"<|endoftext|>"), None);
        assert_eq!(ours.rank(b"definitely not a single token, this"), None);
    }

    #[test]
    fn counts_match_tiktoken() {
        let samples = [
            "",
            " ",
            "Hello, world!",
            "The quick brown fox jumps over the lazy dog. 1234567 3.14159",
            "  leading and trailing spaces   \n\n\t tabs\r\n",
            "<|endoftext|> special tokens count as text <|endofprompt|>",
            "日本語のテキストとemoji 🎉🚀 and Ελληνικά, العربية, हिन्दी",
            "don't I'LL we've THEY'RE it's",
            "fn main() { println!(\"{}\", x.iter().map(|y| y * 2).sum::<u64>()); }",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "https://example.com/a/b?c=d&e=f#g ../../etc/passwd",
            "\u{0}\u{1}\u{7f}\u{80}\u{ff}\u{fffd}",
        ];
        for s in samples {
            assert_eq!(O200k::get().count(s), tiktoken(s), "{s:?}");
        }
    }

    /// Random text from an alphabet of the pattern's edge cases (letters of several scripts and
    /// cases, digits, marks, punctuation, whitespace runs, apostrophes, emoji), and long runs
    /// that take the heap merge.
    #[test]
    fn counts_match_tiktoken_on_random_text() {
        let alphabet: Vec<char> = "aAbBzZ éÉßøñ ж Ж 中文字 ア 한 ٣ 0123456789 ''' sStTdDmMlLvVrReE .,;:!?-_/\\()[]{}\"@#$%^&*+=<>|~` \t\n\r\u{301}\u{200b}\u{a0}🎉👍🏽"
            .chars()
            .collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let len = (next() % if round % 50 == 0 { 3000 } else { 120 }) as usize;
            let mut s = String::with_capacity(len * 2);
            for _ in 0..len {
                let c = alphabet[(next() % alphabet.len() as u64) as usize];
                // Runs of one character make long pieces (the heap merge) and long whitespace.
                let run = if next() % 40 == 0 { (next() % 300) as usize } else { 1 };
                for _ in 0..run {
                    s.push(c);
                }
            }
            assert_eq!(O200k::get().count(&s), tiktoken(&s), "{s:?}");
        }
    }

    #[test]
    fn long_pieces_take_the_heap_merge_and_agree() {
        for s in [
            "x".repeat(5000),
            "ab".repeat(3000),
            "🎉".repeat(700),
            "Supercalifragilisticexpialidocious".repeat(40),
            "0123456789abcdef".repeat(300),
        ] {
            assert_eq!(O200k::get().count(&s), tiktoken(&s));
        }
    }
}

#[cfg(test)]
mod hostile {
    use super::*;

    /// A run of a million spaces before a word makes the pattern's `\s+(?!\S)` backtrack; past
    /// fancy-regex's limit tiktoken-rs panics. Here the count goes on, never below the truth.
    #[test]
    fn whitespace_past_the_backtracking_limit_is_counted_not_a_panic() {
        let text = format!("a{}b", " ".repeat(1_000_001));
        let started = std::time::Instant::now();
        let n = O200k::get().count(&text);
        assert!(n >= 2, "{n}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        let theirs = std::panic::catch_unwind(|| tiktoken_rs::o200k_base_singleton().count_ordinary(&text));
        assert!(
            theirs.is_err(),
            "tiktoken-rs no longer panics here: compare the counts instead"
        );
    }
}
