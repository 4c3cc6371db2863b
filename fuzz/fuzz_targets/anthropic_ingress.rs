//! The Anthropic Messages ingress: byte 0 picks the direction (0: a client's Messages request to
//! an OpenAI request, as the gateway parses it; 1: an OpenAI response back to a Messages response;
//! 2: an OpenAI stream back to Messages events, chunked by byte 1). No panic; what goes back to
//! the client is JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::check_stream;
use switchyard_providers::anthropic::ingress::{request_to_openai, response_from_openai, StreamFromOpenAi};
use switchyard_providers::Json;

fuzz_target!(|input: &[u8]| {
    let [mode, seed, data @ ..] = input else { return };
    match mode % 3 {
        0 => {
            if let Ok(native) = serde_json::from_slice::<Json>(data) {
                if let Ok(converted) = request_to_openai(&native) {
                    // The gateway serialises the converted request and parses it again.
                    let bytes = serde_json::to_vec(&converted).unwrap_or_default();
                    assert!(serde_json::from_slice::<Json>(&bytes).is_ok());
                }
            }
        }
        1 => {
            if let Ok(body) = response_from_openai(data, "claude-fuzz") {
                assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
            }
        }
        _ => check_stream(&|| Box::new(StreamFromOpenAi::new("claude-fuzz")), *seed, data),
    }
});
