//! The mock refuses what each real API refuses, in that provider's status and error shape.
//! One table per API: a valid request, then each change to it the provider would refuse and
//! what the refusal must say.

use serde_json::{json, Value};

use crate::common::{spawn, Mock};

/// How a case sends its body.
#[derive(Clone, Copy)]
enum Api {
    OpenAiChat,
    OpenAiEmbeddings,
    OpenAiResponses,
    /// Azure chat with this `api-version`.
    AzureChat(&'static str),
    Anthropic,
    VertexAnthropic,
    BedrockConverse,
    BedrockClaude,
    Gemini,
    Cohere,
}

async fn send(mock: &Mock, api: Api, body: &Value) -> (u16, Value) {
    let http = &mock.http;
    let res = match api {
        Api::OpenAiChat => mock.post_bearer("/v1/chat/completions", body).await,
        Api::OpenAiEmbeddings => mock.post_bearer("/v1/embeddings", body).await,
        Api::OpenAiResponses => mock.post_bearer("/v1/responses", body).await,
        Api::AzureChat(version) => http
            .post(mock.url(&format!(
                "/openai/deployments/gpt4o/chat/completions?api-version={version}"
            )))
            .header("api-key", "k")
            .json(body)
            .send()
            .await
            .unwrap(),
        Api::Anthropic => http
            .post(mock.url("/v1/messages"))
            .header("x-api-key", "k")
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .unwrap(),
        Api::VertexAnthropic => http
            .post(mock.url("/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude:rawPredict"))
            .bearer_auth("t")
            .json(body)
            .send()
            .await
            .unwrap(),
        Api::BedrockConverse => mock.bedrock_ok("/model/amazon.nova-lite-v1:0/converse", body).await,
        Api::BedrockClaude => mock.bedrock_ok("/model/anthropic.claude-v2/invoke", body).await,
        Api::Gemini => http
            .post(mock.url("/v1beta/models/gemini-2.0-flash:generateContent"))
            .header("x-goog-api-key", "k")
            .json(body)
            .send()
            .await
            .unwrap(),
        Api::Cohere => mock.post_bearer("/v2/chat", body).await,
    };
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// A valid body for each API.
fn valid(api: Api) -> Value {
    match api {
        Api::OpenAiChat => json!({"model": "gpt-4o", "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]}
        ], "temperature": 2, "stream_options": null}),
        Api::AzureChat(_) => {
            json!({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]})
        }
        Api::OpenAiEmbeddings => {
            json!({"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "float"})
        }
        Api::OpenAiResponses => json!({"model": "gpt-4o", "input": "hi", "instructions": "be brief"}),
        Api::Anthropic => json!({"model": "claude", "max_tokens": 10, "system": [{"type": "text", "text": "be brief"}],
            // Two user turns in a row: the API no longer asks roles to alternate.
            "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": [{"type": "text", "text": "again"}]}],
            "temperature": 1}),
        Api::VertexAnthropic | Api::BedrockClaude => json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]}),
        Api::BedrockConverse => json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "system": [{"text": "be brief"}], "inferenceConfig": {"maxTokens": 10, "temperature": 0.5}}),
        Api::Gemini => json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "system_instruction": {"parts": [{"text": "be brief"}]}, "generationConfig": {"maxOutputTokens": 10}}),
        Api::Cohere => {
            json!({"model": "command-r", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]})
        }
    }
}

/// Sets (or with `null` at `remove`, removes) one field: `a.b.0.c` paths.
fn edit(mut body: Value, path: &str, value: Option<Value>) -> Value {
    let mut keys: Vec<&str> = path.split('.').collect();
    let last = keys.pop().unwrap();
    let mut at = &mut body;
    for k in keys {
        at = match k.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[k],
        };
    }
    match (value, last.parse::<usize>()) {
        (Some(v), Ok(i)) => at[i] = v,
        (Some(v), Err(_)) => at[last] = v,
        (None, _) => {
            at.as_object_mut().unwrap().remove(last);
        }
    }
    body
}

struct Case {
    api: Api,
    path: &'static str,
    /// `None` removes the field.
    value: Option<Value>,
    status: u16,
    /// The JSON pointer of the error message, and what it must say.
    pointer: &'static str,
    says: &'static str,
}

fn case(
    api: Api,
    path: &'static str,
    value: Option<Value>,
    status: u16,
    pointer: &'static str,
    says: &'static str,
) -> Case {
    Case {
        api,
        path,
        value,
        status,
        pointer,
        says,
    }
}

#[tokio::test]
async fn valid_bodies_are_served() {
    let mock = spawn().await;
    for api in [
        Api::OpenAiChat,
        Api::OpenAiEmbeddings,
        Api::OpenAiResponses,
        Api::AzureChat("2024-10-21"),
        Api::Anthropic,
        Api::VertexAnthropic,
        Api::BedrockConverse,
        Api::BedrockClaude,
        Api::Gemini,
        Api::Cohere,
    ] {
        let (status, body) = send(&mock, api, &valid(api)).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test]
async fn each_api_refuses_what_its_provider_refuses() {
    use Api::*;
    let oa = "/error/message";
    let an = "/error/message";
    let aws = "/message";
    let g = "/error/message";
    let co = "/message";
    let cases = [
        // OpenAI chat completions.
        case(OpenAiChat, "model", None, 400, oa, "Missing required parameter: 'model'."),
        case(OpenAiChat, "messages", Some(json!([])), 400, oa, "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead."),
        case(OpenAiChat, "messages.1.role", Some(json!("human")), 400, oa, "Invalid value: 'human'. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool', and 'function'."),
        case(OpenAiChat, "max_tokens_to_sample", Some(json!(5)), 400, oa, "Unrecognized request argument supplied: max_tokens_to_sample"),
        case(OpenAiChat, "max_tokens", Some(json!("5")), 400, oa, "Invalid type for 'max_tokens': expected an integer, but got a string instead."),
        case(OpenAiChat, "temperature", Some(json!(2.5)), 400, oa, "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.5 instead."),
        case(OpenAiChat, "stream_options", Some(json!({"usage": true})), 400, oa, "Unknown parameter: 'stream_options.usage'."),
        case(OpenAiEmbeddings, "input", None, 400, oa, "Missing required parameter: 'input'."),
        case(OpenAiEmbeddings, "encoding_format", Some(json!("int8")), 400, oa, "Invalid value: 'int8'. Supported values are: 'float' and 'base64'."),
        case(OpenAiResponses, "messages", Some(json!([])), 400, oa, "Unrecognized request argument supplied: messages"),
        // Azure: `developer` only from 2024-12-01-preview on.
        case(AzureChat("2024-10-21"), "messages.0.role", Some(json!("developer")), 400, oa, "Invalid value: 'developer'. Supported values are: 'system', 'assistant', 'user', 'function', and 'tool'."),
        case(AzureChat("2024-10-21"), "logit_bias_typo", Some(json!({})), 400, oa, "Unrecognized request argument supplied: logit_bias_typo"),
        // Anthropic Messages.
        case(Anthropic, "max_tokens", None, 400, an, "max_tokens: Field required"),
        case(Anthropic, "max_tokens", Some(json!(0)), 400, an, "max_tokens: Input should be greater than or equal to 1"),
        case(Anthropic, "max_tokens", Some(json!(1.5)), 400, an, "max_tokens: Input should be a valid integer"),
        case(Anthropic, "model", None, 400, an, "model: Field required"),
        case(Anthropic, "messages.0.role", Some(json!("system")), 400, an, "messages.0.role: Input should be 'user' or 'assistant'"),
        case(Anthropic, "messages.1.content.0.type", Some(json!("input_text")), 400, an, "messages.1.content.0.type: Input tag 'input_text' found using 'type' does not match any of the expected tags: 'text', 'image', 'document', 'search_result', 'thinking', 'redacted_thinking', 'tool_use', 'tool_result', 'server_tool_use', 'web_search_tool_result', 'web_fetch_tool_result', 'code_execution_tool_result', 'bash_code_execution_tool_result', 'text_editor_code_execution_tool_result', 'tool_search_tool_result', 'mcp_tool_use', 'mcp_tool_result', 'container_upload'"),
        case(Anthropic, "messages.1.content", Some(json!({"type": "text", "text": "x"})), 400, an, "messages.1.content: Input should be a valid string"),
        case(Anthropic, "system", Some(json!([{"type": "image", "source": {}}])), 400, an, "system.0.type: Input should be 'text'"),
        case(Anthropic, "temperature", Some(json!(1.5)), 400, an, "temperature: Input should be less than or equal to 1"),
        case(Anthropic, "stop", Some(json!(["x"])), 400, an, "stop: Extra inputs are not permitted"),
        case(Anthropic, "messages.0.name", Some(json!("bob")), 400, an, "messages.0.name: Extra inputs are not permitted"),
        case(Anthropic, "messages", Some(json!([])), 400, an, "messages: List should have at least 1 item after validation, not 0"),
        case(VertexAnthropic, "anthropic_version", None, 400, an, "anthropic_version: Field required"),
        case(BedrockClaude, "max_tokens", None, 400, aws, "Malformed input request: #: required key [max_tokens] not found, please reformat your input and try again."),
        case(BedrockClaude, "top_n", Some(json!(1)), 400, aws, "Malformed input request: #: extraneous key [top_n] is not permitted, please reformat your input and try again."),
        // Bedrock Converse.
        case(BedrockConverse, "messages", None, 400, aws, "1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null"),
        case(BedrockConverse, "messages.0.role", Some(json!("system")), 400, aws, "1 validation error detected: Value 'system' at 'messages.1.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]"),
        case(BedrockConverse, "messages.0.content.0", Some(json!({"type": "text", "text": "hi"})), 400, aws, "1 validation error detected: Value at 'messages.1.member.content.1.member' failed to satisfy constraint: Member must set exactly one of [text, image, document, video, audio, toolUse, toolResult, guardContent, cachePoint, reasoningContent, citationsContent, searchResult]"),
        case(BedrockConverse, "inferenceConfig.maxTokens", Some(json!(0)), 400, aws, "1 validation error detected: Value '0' at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1"),
        case(BedrockConverse, "inferenceConfig.max_tokens", Some(json!(5)), 400, aws, "Malformed input request: extraneous key [max_tokens] is not permitted, please reformat your input and try again."),
        // Gemini generateContent.
        case(Gemini, "contents", None, 400, g, "* GenerateContentRequest.contents: contents is not specified\n"),
        case(Gemini, "contents.0.role", Some(json!("assistant")), 400, g, "Please use a valid role: user, model."),
        case(Gemini, "generationConfig.max_tokens", Some(json!(5)), 400, g, "Invalid JSON payload received. Unknown name \"max_tokens\" at 'generation_config': Cannot find field."),
        case(Gemini, "temperature", Some(json!(0.5)), 400, g, "Invalid JSON payload received. Unknown name \"temperature\": Cannot find field."),
        case(Gemini, "contents.0.parts", Some(json!([{"type": "text", "text": "hi"}])), 400, g, "Invalid JSON payload received. Unknown name \"type\" at 'contents[0].parts[0]': Cannot find field."),
        // Cohere chat v2.
        case(Cohere, "messages.1.role", Some(json!("chatbot")), 400, co, "invalid request: invalid role 'chatbot' in messages.1.role: must be one of user, assistant, system, tool"),
        case(Cohere, "model", None, 400, co, "invalid request: model is required"),
        case(Cohere, "max_completion_tokens", Some(json!(5)), 400, co, "invalid request: unknown field: parameter max_completion_tokens is not a valid field"),
    ];
    let mock = spawn().await;
    for c in cases {
        let body = edit(valid(c.api), c.path, c.value);
        let (status, answer) = send(&mock, c.api, &body).await;
        assert_eq!(status, c.status, "{} -> {answer}", c.path);
        assert_eq!(
            answer.pointer(c.pointer).and_then(Value::as_str),
            Some(c.says),
            "{} -> {answer}",
            c.path
        );
    }
}

#[tokio::test]
async fn refusals_keep_each_providers_error_shape() {
    let mock = spawn().await;
    let (_, openai) = send(
        &mock,
        Api::OpenAiChat,
        &edit(valid(Api::OpenAiChat), "messages.0.role", Some(json!("bot"))),
    )
    .await;
    assert_eq!(openai["error"]["type"], "invalid_request_error");
    assert_eq!(openai["error"]["param"], "messages[0].role");
    assert_eq!(openai["error"]["code"], "invalid_value");
    let (_, unknown) = send(
        &mock,
        Api::OpenAiChat,
        &edit(valid(Api::OpenAiChat), "foo", Some(json!(1))),
    )
    .await;
    assert_eq!(unknown["error"]["param"], Value::Null);
    assert_eq!(unknown["error"]["code"], Value::Null);

    let (_, anthropic) = send(&mock, Api::Anthropic, &edit(valid(Api::Anthropic), "max_tokens", None)).await;
    assert_eq!(anthropic["type"], "error");
    assert_eq!(anthropic["error"]["type"], "invalid_request_error");

    let res = mock
        .bedrock_ok(
            "/model/amazon.nova-lite-v1:0/converse",
            &json!({"messages": [{"role": "bot", "content": []}]}),
        )
        .await;
    assert_eq!(
        res.headers()["x-amzn-errortype"].to_str().unwrap().split(':').next(),
        Some("ValidationException")
    );

    let (_, gemini) = send(&mock, Api::Gemini, &json!({"contents": []})).await;
    assert_eq!(gemini["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(gemini["error"]["code"], 400);
    assert_eq!(gemini["error"]["details"][0]["fieldViolations"][0]["field"], "contents");
}

#[tokio::test]
async fn azure_takes_developer_from_2024_12_01_preview() {
    let mock = spawn().await;
    let body = edit(valid(Api::AzureChat("")), "messages.0.role", Some(json!("developer")));
    for (version, status) in [
        ("2024-06-01", 400),
        ("2024-10-21", 400),
        ("2024-10-01-preview", 400),
        ("2024-12-01-preview", 200),
        ("2025-04-01-preview", 200),
        ("preview", 200),
    ] {
        let (got, answer) = send(&mock, Api::AzureChat(version), &body).await;
        assert_eq!(got, status, "{version}: {answer}");
        if status == 400 {
            assert_eq!(answer["error"]["param"], "messages[0].role");
            assert_eq!(answer["error"]["code"], "invalid_value");
        }
    }
}
