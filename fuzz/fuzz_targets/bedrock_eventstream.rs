//! Bedrock's ConverseStream decoder (AWS event-stream frames to OpenAI chunks) fed in chunks:
//! no panic, and the same output however the frames are split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_config::ProviderKind;
use switchyard_fuzz::{check_stream, provider, target};
use switchyard_providers::bedrock::ConverseStream;

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let p = provider(ProviderKind::Bedrock);
    let t = target(&p, "us.anthropic.claude-3-5-sonnet-20241022-v2:0", false);
    check_stream(&|| Box::new(ConverseStream::new(&t)), seed, data);
});
