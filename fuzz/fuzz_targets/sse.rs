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
    for part in chunks(seed, data) {
        events.extend(chunked.feed(part));
    }
    let mut whole = Parser::default();
    let expected = whole.feed(data);
    assert_eq!(events, expected, "chunked parse differs from a whole parse");
    assert_eq!(chunked.pending(), whole.pending());
});
