//! The gemini adapter's stream translator fed in chunks: byte 0 picks the operation and the model,
//! byte 1 the chunking, the rest is the upstream stream. No panic, and the same output however
//! the stream is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::{check_adapter_stream, GOOGLE_KINDS};

fuzz_target!(|input: &[u8]| {
    for &kind in GOOGLE_KINDS {
        check_adapter_stream(kind, input);
    }
});
