//! The mapping table: which Switchyard provider type serves each LiteLLM model prefix
//! (`azure/`, `bedrock/`, `vertex_ai/`...), where its API key comes from when the config names
//! none, and how LiteLLM's `api_base` is written as a `baseUrl`.
//!
//! One row per prefix; adding a provider is adding a row.

use switchyard_api::ProviderType;

/// How a LiteLLM provider prefix maps onto a Switchyard Provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The LiteLLM prefix, without the slash.
    pub prefix: &'static str,
    pub provider_type: ProviderType,
    /// The environment variable LiteLLM reads the API key from when `api_key` is not set
    /// (`None`: the provider takes no API key, or its credentials are not a single key).
    pub default_key_env: Option<&'static str>,
    /// The base URL to use when the config has no `api_base` and Switchyard's type has no
    /// default (OpenAI-compatible services LiteLLM knows by name).
    pub default_base: Option<&'static str>,
    /// How `api_base` becomes `baseUrl`.
    pub base: BaseStyle,
    /// The route mode this prefix implies (`text-completion-openai/` serves completions).
    pub completions: bool,
}

/// How LiteLLM's `api_base` for a provider relates to Switchyard's `baseUrl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseStyle {
    /// The same URL (OpenAI-compatible bases include `/v1`; Azure's is the resource URL).
    Same,
    /// LiteLLM takes the server root (Ollama: `http://localhost:11434`); Switchyard the
    /// OpenAI-compatible API under it (`/v1`).
    AppendV1,
    /// LiteLLM accepts the full Messages URL; Switchyard wants the root (Anthropic).
    StripMessages,
}

const fn row(
    prefix: &'static str,
    provider_type: ProviderType,
    default_key_env: Option<&'static str>,
    default_base: Option<&'static str>,
    base: BaseStyle,
) -> Mapping {
    Mapping {
        prefix,
        provider_type,
        default_key_env,
        default_base,
        base,
        completions: false,
    }
}

use BaseStyle::{AppendV1, Same, StripMessages};
use ProviderType as T;

/// Every LiteLLM prefix the importer carries over.
pub const TABLE: &[Mapping] = &[
    row("openai", T::Openai, Some("OPENAI_API_KEY"), None, Same),
    Mapping {
        completions: true,
        ..row("text-completion-openai", T::Openai, Some("OPENAI_API_KEY"), None, Same)
    },
    row("azure", T::AzureOpenai, Some("AZURE_API_KEY"), None, Same),
    row("azure_ai", T::OpenaiCompatible, Some("AZURE_AI_API_KEY"), None, Same),
    row(
        "anthropic",
        T::Anthropic,
        Some("ANTHROPIC_API_KEY"),
        None,
        StripMessages,
    ),
    row("bedrock", T::Bedrock, None, None, Same),
    row("vertex_ai", T::Vertex, None, None, Same),
    row("vertex_ai_beta", T::Vertex, None, None, Same),
    row("gemini", T::Gemini, Some("GEMINI_API_KEY"), None, Same),
    row("mistral", T::Mistral, Some("MISTRAL_API_KEY"), None, Same),
    row("groq", T::Groq, Some("GROQ_API_KEY"), None, Same),
    row("xai", T::Xai, Some("XAI_API_KEY"), None, Same),
    row("deepseek", T::Deepseek, Some("DEEPSEEK_API_KEY"), None, Same),
    row("cohere", T::Cohere, Some("COHERE_API_KEY"), None, Same),
    row("cohere_chat", T::Cohere, Some("COHERE_API_KEY"), None, Same),
    row("voyage", T::Voyage, Some("VOYAGE_API_KEY"), None, Same),
    row("jina_ai", T::Jina, Some("JINA_AI_API_KEY"), None, Same),
    row("together_ai", T::Together, Some("TOGETHERAI_API_KEY"), None, Same),
    row("fireworks_ai", T::Fireworks, Some("FIREWORKS_AI_API_KEY"), None, Same),
    row("openrouter", T::Openrouter, Some("OPENROUTER_API_KEY"), None, Same),
    row("ollama", T::Ollama, None, Some("http://localhost:11434/v1"), AppendV1),
    row(
        "ollama_chat",
        T::Ollama,
        None,
        Some("http://localhost:11434/v1"),
        AppendV1,
    ),
    row("hosted_vllm", T::Vllm, None, None, Same),
    row(
        "perplexity",
        T::OpenaiCompatible,
        Some("PERPLEXITYAI_API_KEY"),
        Some("https://api.perplexity.ai"),
        Same,
    ),
    row(
        "deepinfra",
        T::OpenaiCompatible,
        Some("DEEPINFRA_API_KEY"),
        Some("https://api.deepinfra.com/v1/openai"),
        Same,
    ),
    row(
        "cerebras",
        T::OpenaiCompatible,
        Some("CEREBRAS_API_KEY"),
        Some("https://api.cerebras.ai/v1"),
        Same,
    ),
    row(
        "nvidia_nim",
        T::OpenaiCompatible,
        Some("NVIDIA_NIM_API_KEY"),
        Some("https://integrate.api.nvidia.com/v1"),
        Same,
    ),
];

/// The mapping of a prefix, if the importer carries it.
pub fn by_prefix(prefix: &str) -> Option<&'static Mapping> {
    TABLE.iter().find(|m| m.prefix == prefix)
}

/// Splits `litellm_params.model` into its mapping and the upstream model name. A model without
/// a known prefix is looked up the way LiteLLM infers the provider of well-known names (`gpt-4o`
/// is OpenAI, `claude-...` Anthropic); `Err` carries the prefix (or the name) that has no row.
pub fn split_model(model: &str) -> Result<(&'static Mapping, String), String> {
    if let Some((prefix, rest)) = model.split_once('/') {
        if let Some(m) = by_prefix(prefix) {
            let rest = match m.provider_type {
                // LiteLLM's route selectors: Switchyard always speaks Converse to Bedrock.
                T::Bedrock => rest.strip_prefix("converse/").unwrap_or(rest).to_owned(),
                _ => rest.to_owned(),
            };
            return Ok((m, rest));
        }
        return Err(prefix.to_owned());
    }
    let inferred = if [
        "gpt-",
        "o1",
        "o3",
        "o4",
        "chatgpt-",
        "text-embedding-",
        "davinci",
        "babbage",
    ]
    .iter()
    .any(|p| model.starts_with(p))
    {
        by_prefix("openai")
    } else if model.starts_with("claude-") {
        by_prefix("anthropic")
    } else {
        None
    };
    inferred.map(|m| (m, model.to_owned())).ok_or_else(|| model.to_owned())
}

/// `api_base` as Switchyard's `baseUrl` for this mapping.
pub fn base_url(m: &Mapping, api_base: &str) -> String {
    let trimmed = api_base.trim_end_matches('/');
    match m.base {
        Same => trimmed.to_owned(),
        AppendV1 if trimmed.ends_with("/v1") => trimmed.to_owned(),
        AppendV1 => format!("{trimmed}/v1"),
        StripMessages => trimmed
            .strip_suffix("/v1/messages")
            .or_else(|| trimmed.strip_suffix("/v1"))
            .unwrap_or(trimmed)
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_map_to_provider_types() {
        let cases = [
            ("azure/my-gpt4o", T::AzureOpenai, "my-gpt4o"),
            (
                "bedrock/anthropic.claude-3-sonnet-20240229-v1:0",
                T::Bedrock,
                "anthropic.claude-3-sonnet-20240229-v1:0",
            ),
            ("bedrock/converse/meta.llama3-70b", T::Bedrock, "meta.llama3-70b"),
            ("vertex_ai/gemini-1.5-pro", T::Vertex, "gemini-1.5-pro"),
            (
                "anthropic/claude-3-5-sonnet-20240620",
                T::Anthropic,
                "claude-3-5-sonnet-20240620",
            ),
            ("openai/gpt-4o", T::Openai, "gpt-4o"),
            ("groq/llama3-8b-8192", T::Groq, "llama3-8b-8192"),
            ("ollama/llama3", T::Ollama, "llama3"),
            ("mistral/mistral-large-latest", T::Mistral, "mistral-large-latest"),
            ("gemini/gemini-1.5-flash", T::Gemini, "gemini-1.5-flash"),
            ("xai/grok-2", T::Xai, "grok-2"),
            ("hosted_vllm/facebook/opt-125m", T::Vllm, "facebook/opt-125m"),
            (
                "together_ai/meta-llama/Llama-3-8b",
                T::Together,
                "meta-llama/Llama-3-8b",
            ),
            ("gpt-3.5-turbo", T::Openai, "gpt-3.5-turbo"),
            ("claude-3-haiku-20240307", T::Anthropic, "claude-3-haiku-20240307"),
        ];
        for (model, ty, upstream) in cases {
            let (m, rest) = split_model(model).unwrap();
            assert_eq!((m.provider_type, rest.as_str()), (ty, upstream), "{model}");
        }
    }

    #[test]
    fn unknown_prefixes_are_refused() {
        assert_eq!(split_model("huggingface/bigcode/starcoder").unwrap_err(), "huggingface");
        assert_eq!(split_model("my-local-model").unwrap_err(), "my-local-model");
    }

    #[test]
    fn base_urls() {
        let ollama = by_prefix("ollama").unwrap();
        assert_eq!(base_url(ollama, "http://localhost:11434"), "http://localhost:11434/v1");
        assert_eq!(
            base_url(ollama, "http://localhost:11434/v1/"),
            "http://localhost:11434/v1"
        );
        let anthropic = by_prefix("anthropic").unwrap();
        assert_eq!(
            base_url(anthropic, "https://api.anthropic.com/v1/messages"),
            "https://api.anthropic.com"
        );
        let azure = by_prefix("azure").unwrap();
        assert_eq!(
            base_url(azure, "https://res.openai.azure.com/"),
            "https://res.openai.azure.com"
        );
    }
}
