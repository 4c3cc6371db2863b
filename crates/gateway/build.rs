//! Writes `o200k_base`'s ordinary tokens, in rank order, to `$OUT_DIR/o200k_base.bin` for the
//! gateway's compact tokenizer (`src/o200k.rs`): each token is one length byte and its bytes; a
//! rank with no ordinary token is a zero length. tiktoken-rs is the source of truth, read here at
//! build time so that the running gateway never holds its three copies of the table (41 MiB).

use std::io::Write;

#[path = "src/o200k_index.rs"]
mod o200k_index;

/// Ranks past the last ordinary token (o200k's are below 200,000; its special tokens above).
const RANKS: u32 = 200_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/o200k_index.rs");
    let bpe = tiktoken_rs::o200k_base()?;
    let specials = [tiktoken_rs::ENDOFTEXT.as_bytes(), tiktoken_rs::ENDOFPROMPT.as_bytes()];
    let mut out = Vec::with_capacity(2 << 20);
    let mut tokens = 0u32;
    for rank in 0..RANKS {
        let bytes = match bpe.decode_bytes(&[rank]) {
            Ok(b) if !specials.contains(&b.as_slice()) => b,
            _ => Vec::new(),
        };
        let len = u8::try_from(bytes.len()).map_err(|_| format!("token {rank} is {} bytes", bytes.len()))?;
        tokens += u32::from(len > 0);
        out.push(len);
        out.extend_from_slice(&bytes);
    }
    // A table this short means tiktoken-rs changed what it ships: fail the build, not the count.
    if tokens < 199_000 {
        return Err(format!("o200k_base has {tokens} ordinary tokens below rank {RANKS}").into());
    }
    let dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::File::create(dir.join("o200k_base.bin"))?.write_all(&out)?;
    // The rank index too, so that a gateway builds nothing at start and holds no copy of it: its
    // pages are the binary's, read in as lookups touch them.
    let (starts, slots) = o200k_index::build(&out);
    for (name, words) in [("o200k_starts.bin", starts), ("o200k_slots.bin", slots)] {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        std::fs::File::create(dir.join(name))?.write_all(&bytes)?;
    }
    Ok(())
}
