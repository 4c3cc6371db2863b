//! The SSE push parser fed in chunks split at positions taken from the input: it must not panic,
//! and the chunked parse must give the same events and the same unfinished tail as one feed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::chunks;
use switchyard_providers::sse::Parser;

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let mut chunked = Parser::default();
    let mut events = Vec::new();
    let mut refused = false;
    for part in chunks(seed, data) {
        match chunked.feed(part) {
            Ok(more) => events.extend(more),
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    let mut whole = Parser::default();
    match whole.feed(data) {
        Ok(expected) => {
            assert!(!refused, "a chunked feed refused what one feed accepts");
            assert_eq!(events, expected, "chunked parse differs from a whole parse");
            assert_eq!(chunked.pending(), whole.pending());
        }
        // An event over the cap is refused however the bytes arrive.
        Err(_) => assert!(refused, "one feed refused what a chunked feed accepted"),
    }
});
