//! The anthropic adapter's translation of a non-streaming upstream response (and of an error body):
//! byte 0 picks the operation and the model, byte 1 the upstream status of the error mapping, the
//! rest is the body. Must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::{check_response, ANTHROPIC_KINDS};

fuzz_target!(|input: &[u8]| {
    for &kind in ANTHROPIC_KINDS {
        check_response(kind, input);
    }
});
