//! The rank index of the compact `o200k_base` table, shared by `build.rs` (which writes it into
//! the binary) and `o200k.rs` (which reads it): one definition of the slot layout and the hash,
//! so the two cannot disagree.
//!
//! The table is every ordinary token in rank order, each a length byte then its bytes. The index
//! is two arrays of little-endian `u32`: `starts`, where each rank's bytes begin in the table
//! (their length is the byte before; a rank with no token has length 0), and `slots`, an
//! open-addressed hash of the tokens' bytes to rank + 1 (0 for an empty slot) with a tag of the
//! hash in the bits above [`RANK_BITS`], probed linearly.

/// Slots of the rank index: a power of two, under 40 % full with o200k's 199,998 tokens.
pub const SLOTS: usize = 1 << 19;
/// The bits of a slot that hold rank + 1 (o200k's ranks are below 2^18); the rest is a tag.
pub const RANK_BITS: u32 = (1 << 18) - 1;

/// The first slot to probe for `bytes`, and the tag its entry carries.
pub fn slot_of(bytes: &[u8]) -> (usize, u32) {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(bytes);
    let h = h.finish();
    let h = h ^ (h >> 29);
    (h as usize & (SLOTS - 1), (h >> 32) as u32 & !RANK_BITS)
}

/// `starts` and `slots` of `table`.
// Called by build.rs, and by the gateway's tests to check what build.rs wrote.
#[allow(dead_code)]
pub fn build(table: &[u8]) -> (Vec<u32>, Vec<u32>) {
    let mut starts = Vec::with_capacity(200_000);
    let mut at = 0usize;
    while let Some(&len) = table.get(at) {
        // The table is well under 4 GiB (about 1.7 MB).
        starts.push(u32::try_from(at + 1).unwrap_or(u32::MAX));
        at += 1 + usize::from(len);
    }
    let mut slots = vec![0u32; SLOTS];
    for (rank, &start) in starts.iter().enumerate() {
        let start = start as usize;
        let len = table.get(start - 1).map_or(0, |&l| usize::from(l));
        let bytes = table.get(start..start + len).unwrap_or(&[]);
        if bytes.is_empty() {
            continue;
        }
        let (mut slot, tag) = slot_of(bytes);
        while slots[slot] != 0 {
            slot = (slot + 1) & (SLOTS - 1);
        }
        slots[slot] = tag | u32::try_from(rank + 1).unwrap_or(0);
    }
    (starts, slots)
}
