//! A client's OpenAI request body as the gateway reads it (`serde_json` into a `Json` object),
//! then every provider's `build` on it: the code client bytes reach. Byte 0 picks the operation,
//! streaming and dropUnsupportedParams; the rest is the body. No panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_config::ProviderKind;
use switchyard_fuzz::{models, operation, provider, target};
use switchyard_providers::Json;

const KINDS: &[ProviderKind] = &[
    ProviderKind::Openai,
    ProviderKind::AzureOpenai,
    ProviderKind::Anthropic,
    ProviderKind::Bedrock,
    ProviderKind::Gemini,
    ProviderKind::Vertex,
    ProviderKind::Cohere,
];

fuzz_target!(|input: &[u8]| {
    let Some((&flags, body)) = input.split_first() else {
        return;
    };
    let Ok(request) = serde_json::from_slice::<Json>(body) else {
        return;
    };
    let op = operation(flags);
    let stream = flags & 4 != 0;
    let drop = flags & 8 != 0;
    for &kind in KINDS {
        let p = provider(kind);
        for model in models(kind) {
            let _ = switchyard_providers::adapter(kind).build(op, &request, &target(&p, model, drop), stream);
        }
    }
});
