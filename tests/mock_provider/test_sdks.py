"""The mock provider held to the real thing: each provider's official SDK, pointed at it, must
parse what it sends (streams, tool calls, embeddings, errors).

The server is started through `$SWITCHYARD_BIN mock-provider --listen 127.0.0.1:PORT`, or, when
SWITCHYARD_BIN is unset, through `cargo run -p switchyard-mock-provider --example serve`.

Run: pip install -r tests/requirements.txt && pytest tests/mock_provider
"""

import json
import logging
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import anthropic
import boto3
import botocore.config
import botocore.exceptions
import cohere
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

REPO = Path(__file__).resolve().parents[2]
ACCESS_KEY = "AKIDSWITCHYARDTEST"
SECRET_KEY = "switchyard-test-secret"
WEATHER_TOOL_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def base_url():
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    env = dict(os.environ)
    binary = os.environ.get("SWITCHYARD_BIN")
    if binary:
        cmd = [binary, "mock-provider", "--listen", addr]
    else:
        cache = os.environ.get("SWITCHYARD_CACHE", str(Path.home() / ".cache" / "switchyard"))
        env.setdefault("CARGO_TARGET_DIR", str(Path(cache) / "target"))
        cmd = ["cargo", "run", "-q", "-p", "switchyard-mock-provider", "--example", "serve", "--", addr]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    url = f"http://{addr}"
    deadline = time.monotonic() + 900  # a cold cargo build can take minutes
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mock provider exited with {proc.returncode}: {cmd}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mock provider did not come up")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def last_request(base_url, provider):
    return _get_json(f"{base_url}/mock/last-request?provider={provider}")


# --------------------------------------------------------------------------------------------
# OpenAI


@pytest.fixture
def oai(base_url):
    return openai.OpenAI(api_key="sk-test", base_url=f"{base_url}/v1", max_retries=0)


def test_openai_chat(oai):
    r = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
    )
    assert r.choices[0].message.content == "Hello! You said: hello there"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (4, 5, 9)


def test_openai_stream_with_usage(oai):
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! You said: one two three"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == 3
    assert chunks[-1].usage.completion_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_stream_without_usage(oai):
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_tool_call(oai):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL_PARAMS}}]
    r = oai.chat.completions.create(
        model="mock-tool", messages=[{"role": "user", "content": "weather in Paris?"}], tools=tools
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert r.choices[0].finish_reason == "tool_calls"

    # The SDK's stream helper assembles the argument deltas.
    with oai.chat.completions.stream(
        model="mock-tool", messages=[{"role": "user", "content": "weather in Paris?"}], tools=tools
    ) as stream:
        deltas = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    assert len(deltas) > 1
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_openai_embeddings(oai):
    # The SDK asks for base64 by default and decodes it.
    r = oai.embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"])
    assert len(r.data) == 2
    assert len(r.data[0].embedding) == 8
    assert r.usage.prompt_tokens == 3
    again = oai.embeddings.create(model="text-embedding-3-small", input="alpha beta", encoding_format="float")
    assert again.data[0].embedding == pytest.approx(r.data[0].embedding)
    r = oai.embeddings.create(model="text-embedding-3-small", input="x", dimensions=32)
    assert len(r.data[0].embedding) == 32


def test_openai_errors(oai):
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(model="mock-429", messages=msgs)
    assert e.value.response.headers["retry-after"] == "1"
    assert e.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="mock-500", messages=msgs)
    with pytest.raises(openai.InternalServerError) as e:
        oai.chat.completions.create(model="mock-503", messages=msgs)
    assert e.value.status_code == 503
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="mock-context-length", messages=msgs)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="mock-content-policy", messages=msgs)
    assert e.value.code == "content_policy_violation"
    bad = openai.OpenAI(api_key="invalid-key", base_url=oai.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4o", messages=msgs)


def test_openai_flaky_then_ok(base_url):
    client = openai.OpenAI(api_key="sk-test", base_url=f"{base_url}/v1", max_retries=2)
    # Two failures, then success: the SDK's own retries get through.
    r = client.chat.completions.create(model="sdk-mock-flaky-2", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello! You said: hi"


def test_openai_cut_stream_raises(oai):
    stream = oai.chat.completions.create(
        model="mock-cut", messages=[{"role": "user", "content": "one two three four"}], stream=True
    )
    got = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        for chunk in stream:
            got.append(chunk)
    assert 1 <= len(got) <= 4


def test_openai_echo_params(oai, base_url):
    r = oai.chat.completions.create(
        model="mock-echo-params", messages=[{"role": "user", "content": "hi"}], temperature=0.5, max_tokens=7
    )
    echoed = json.loads(r.choices[0].message.content)
    assert echoed["temperature"] == 0.5
    assert echoed["max_tokens"] == 7
    assert last_request(base_url, "openai") == echoed


def test_openai_legacy_completions(oai):
    r = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi")
    assert r.choices[0].text == "Hello! You said: say hi"
    chunks = list(oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello! You said: say hi"


def test_openai_models(oai):
    ids = [m.id for m in oai.models.list()]
    assert "mock-tool" in ids


def test_openai_responses(oai):
    r = oai.responses.create(model="gpt-4.1", instructions="be brief", input="tell me")
    assert r.output_text == "Hello! You said: tell me"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (4, 5)

    events = list(oai.responses.create(model="gpt-4.1", input="tell me", stream=True))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello! You said: tell me"
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens == 5

    with oai.responses.stream(model="mock-tool", input="weather?") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}


# --------------------------------------------------------------------------------------------
# Azure OpenAI


@pytest.fixture
def azure(base_url):
    return openai.AzureOpenAI(
        api_key="azure-test", api_version="2024-10-21", azure_endpoint=base_url, max_retries=0
    )


def test_azure_chat_stream_and_embeddings(azure, base_url):
    r = azure.chat.completions.create(model="my-gpt4o", messages=[{"role": "user", "content": "hello"}])
    assert r.choices[0].message.content == "Hello! You said: hello"
    assert r.usage.total_tokens == 5
    sent = last_request(base_url, "azure")
    assert sent["messages"] == [{"role": "user", "content": "hello"}]

    chunks = list(
        azure.chat.completions.create(
            model="my-gpt4o",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! You said: hello"
    assert chunks[-1].usage.completion_tokens == 4

    e = azure.embeddings.create(model="my-embedder", input="hello")
    assert len(e.data[0].embedding) == 8


def test_azure_rate_limit(azure):
    with pytest.raises(openai.RateLimitError):
        azure.chat.completions.create(model="mock-429", messages=[{"role": "user", "content": "hi"}])


# --------------------------------------------------------------------------------------------
# Anthropic


@pytest.fixture
def claude(base_url):
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=base_url, max_retries=0)


def test_anthropic_message(claude):
    m = claude.messages.create(
        model="claude-mock-4",
        max_tokens=100,
        system="be brief",
        messages=[{"role": "user", "content": "hello there"}],
    )
    assert m.content[0].text == "Hello! You said: hello there"
    assert m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (4, 5)


def test_anthropic_stream(claude):
    with claude.messages.stream(
        model="claude-mock-4", max_tokens=100, messages=[{"role": "user", "content": "hello there"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello! You said: hello there"
    assert final.usage.output_tokens == 5
    assert final.usage.input_tokens == 2
    assert final.stop_reason == "end_turn"


def test_anthropic_tool_use(claude):
    tools = [{"name": "get_weather", "input_schema": WEATHER_TOOL_PARAMS}]
    m = claude.messages.create(
        model="mock-tool", max_tokens=100, tools=tools, messages=[{"role": "user", "content": "weather?"}]
    )
    block = m.content[0]
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", {"city": "Paris"})
    assert m.stop_reason == "tool_use"
    with claude.messages.stream(
        model="mock-tool", max_tokens=100, tools=tools, messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == {"city": "Paris"}


def test_anthropic_errors_and_refusal(claude):
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.RateLimitError) as e:
        claude.messages.create(model="mock-429", max_tokens=10, messages=msgs)
    assert e.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.InternalServerError):
        claude.messages.create(model="mock-500", max_tokens=10, messages=msgs)
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="mock-context-length", max_tokens=10, messages=msgs)
    m = claude.messages.create(model="mock-content-policy", max_tokens=10, messages=msgs)
    assert m.stop_reason == "refusal"
    bad = anthropic.Anthropic(api_key="invalid", base_url=claude.base_url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="claude", max_tokens=10, messages=msgs)


def test_anthropic_on_vertex(base_url):
    client = anthropic.AnthropicVertex(
        region="us-east5", project_id="proj", access_token="ya29.test", base_url=f"{base_url}/v1", max_retries=0
    )
    m = client.messages.create(
        model="claude-sonnet-4@20250514", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert m.content[0].text == "Hello! You said: hi"
    with client.messages.stream(
        model="claude-sonnet-4@20250514", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        assert "".join(stream.text_stream) == "Hello! You said: hi"
    sent = last_request(base_url, "vertex")
    assert sent["anthropic_version"]
    assert "model" not in sent


def test_anthropic_on_bedrock(base_url):
    client = anthropic.AnthropicBedrock(
        aws_access_key=ACCESS_KEY,
        aws_secret_key=SECRET_KEY,
        aws_region="us-east-1",
        base_url=base_url,
        max_retries=0,
    )
    model = "anthropic.claude-3-5-haiku-20241022-v1:0"
    m = client.messages.create(model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text == "Hello! You said: hi"
    with client.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        assert "".join(s.text_stream) == "Hello! You said: hi"


# --------------------------------------------------------------------------------------------
# Bedrock (boto3)


def _bedrock(base_url, secret=SECRET_KEY, access=ACCESS_KEY, token=None):
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=base_url,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


CONVERSE_MSGS = [{"role": "user", "content": [{"text": "hello there"}]}]


def test_bedrock_converse(base_url):
    br = _bedrock(base_url)
    r = br.converse(
        modelId="anthropic.claude-3-haiku-20240307-v1:0",
        system=[{"text": "be brief"}],
        messages=CONVERSE_MSGS,
        inferenceConfig={"maxTokens": 100},
    )
    assert r["output"]["message"]["content"][0]["text"] == "Hello! You said: hello there"
    assert r["stopReason"] == "end_turn"
    assert r["usage"] == {"inputTokens": 4, "outputTokens": 5, "totalTokens": 9}
    assert last_request(base_url, "bedrock")["inferenceConfig"] == {"maxTokens": 100}


def test_bedrock_converse_stream(base_url):
    br = _bedrock(base_url)
    events = list(br.converse_stream(modelId="amazon.nova-lite-v1:0", messages=CONVERSE_MSGS)["stream"])
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "Hello! You said: hello there"
    assert events[0]["messageStart"]["role"] == "assistant"
    stop = next(e for e in events if "messageStop" in e)
    assert stop["messageStop"]["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 5


def test_bedrock_tool_use(base_url):
    br = _bedrock(base_url)
    tool_config = {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": WEATHER_TOOL_PARAMS}}}]}
    r = br.converse(modelId="mock-tool", messages=CONVERSE_MSGS, toolConfig=tool_config)
    use = r["output"]["message"]["content"][0]["toolUse"]
    assert (use["name"], use["input"]) == ("get_weather", {"city": "Paris"})
    assert r["stopReason"] == "tool_use"
    events = list(br.converse_stream(modelId="mock-tool", messages=CONVERSE_MSGS, toolConfig=tool_config)["stream"])
    start = next(e for e in events if "contentBlockStart" in e)
    assert start["contentBlockStart"]["start"]["toolUse"]["name"] == "get_weather"
    args = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e)
    assert json.loads(args) == {"city": "Paris"}


def test_bedrock_invoke_model(base_url):
    br = _bedrock(base_url)
    r = br.invoke_model(
        modelId="amazon.titan-embed-text-v2:0",
        body=json.dumps({"inputText": "hello world", "dimensions": 256}),
        contentType="application/json",
        accept="application/json",
    )
    body = json.loads(r["body"].read())
    assert len(body["embedding"]) == 256
    assert body["inputTextTokenCount"] == 2

    r = br.invoke_model(
        modelId="cohere.embed-english-v3",
        body=json.dumps({"texts": ["a", "b"], "input_type": "search_document"}),
    )
    assert len(json.loads(r["body"].read())["embeddings"]) == 2

    claude = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    r = br.invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0", body=json.dumps(claude))
    assert json.loads(r["body"].read())["content"][0]["text"] == "Hello! You said: hi"
    r = br.invoke_model_with_response_stream(modelId="anthropic.claude-3-haiku-20240307-v1:0", body=json.dumps(claude))
    events = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    assert "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta") == "Hello! You said: hi"


def test_bedrock_errors_and_signatures(base_url):
    br = _bedrock(base_url)
    with pytest.raises(br.exceptions.ThrottlingException):
        br.converse(modelId="mock-429", messages=CONVERSE_MSGS)
    with pytest.raises(br.exceptions.ValidationException):
        br.converse(modelId="mock-context-length", messages=CONVERSE_MSGS)
    with pytest.raises(br.exceptions.ServiceUnavailableException):
        br.converse(modelId="mock-503", messages=CONVERSE_MSGS)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        _bedrock(base_url, secret="wrong").converse(modelId="m", messages=CONVERSE_MSGS)
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(botocore.exceptions.ClientError) as e:
        _bedrock(base_url, access="AKIDOTHER").converse(modelId="m", messages=CONVERSE_MSGS)
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    r = _bedrock(base_url, token="session-token").converse(modelId="m", messages=CONVERSE_MSGS)
    assert r["stopReason"] == "end_turn"


# --------------------------------------------------------------------------------------------
# Gemini and Vertex (google-genai)


@pytest.fixture
def gemini(base_url):
    return genai.Client(api_key="gemini-test", http_options=genai_types.HttpOptions(base_url=base_url))


def test_gemini_generate(gemini):
    r = gemini.models.generate_content(
        model="gemini-2.5-flash",
        contents="hello there",
        config=genai_types.GenerateContentConfig(system_instruction="be brief"),
    )
    assert r.text == "Hello! You said: hello there"
    assert r.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert (r.usage_metadata.prompt_token_count, r.usage_metadata.candidates_token_count) == (4, 5)


def test_gemini_stream(gemini):
    chunks = list(gemini.models.generate_content_stream(model="gemini-2.5-flash", contents="hello there"))
    assert "".join(c.text for c in chunks) == "Hello! You said: hello there"
    assert len(chunks) == 5
    assert chunks[-1].usage_metadata.candidates_token_count == 5
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP


def test_gemini_tool_and_safety(gemini):
    tool = genai_types.Tool(
        function_declarations=[
            genai_types.FunctionDeclaration(name="get_weather", parameters_json_schema=WEATHER_TOOL_PARAMS)
        ]
    )
    r = gemini.models.generate_content(
        model="mock-tool", contents="weather?", config=genai_types.GenerateContentConfig(tools=[tool])
    )
    call = r.function_calls[0]
    assert (call.name, call.args) == ("get_weather", {"city": "Paris"})
    r = gemini.models.generate_content(model="mock-content-policy", contents="bad")
    assert r.candidates[0].finish_reason == genai_types.FinishReason.SAFETY


def test_gemini_embed(gemini):
    r = gemini.models.embed_content(
        model="gemini-embedding-001",
        contents=["alpha", "beta"],
        config=genai_types.EmbedContentConfig(output_dimensionality=8),
    )
    assert len(r.embeddings) == 2
    assert len(r.embeddings[0].values) == 8


def test_gemini_errors(gemini):
    with pytest.raises(genai_errors.ClientError) as e:
        gemini.models.generate_content(model="mock-429", contents="hi")
    assert e.value.code == 429
    assert e.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(genai_errors.ServerError) as e:
        gemini.models.generate_content(model="mock-503", contents="hi")
    assert e.value.code == 503


def _service_account(base_url):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "proj",
        "private_key_id": "mock",
        "private_key": pem,
        "client_email": "mock@proj.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{base_url}/token",
    }
    return service_account.Credentials.from_service_account_info(
        info, scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )


def test_vertex_with_service_account(base_url):
    client = genai.Client(
        vertexai=True,
        project="proj",
        location="us-central1",
        credentials=_service_account(base_url),
        http_options=genai_types.HttpOptions(base_url=base_url),
    )
    r = client.models.generate_content(model="gemini-2.5-flash", contents="hello there")
    assert r.text == "Hello! You said: hello there"
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hello there"))
    assert "".join(c.text for c in chunks) == "Hello! You said: hello there"
    stats = _get_json(f"{base_url}/mock/stats")
    assert stats["requests"]["/token"] >= 1


# --------------------------------------------------------------------------------------------
# Cohere


@pytest.fixture
def co(base_url):
    return cohere.ClientV2(api_key="co-test", base_url=base_url)


NO_RETRY = {"max_retries": 0}


def _no_skipped_events(caplog):
    assert not [r for r in caplog.records if "Skipping SSE event" in r.getMessage()]


def test_cohere_chat(co):
    r = co.chat(
        model="command-a-03-2025",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
    )
    assert r.message.content[0].text == "Hello! You said: hello there"
    assert r.finish_reason == "COMPLETE"
    assert (r.usage.billed_units.input_tokens, r.usage.billed_units.output_tokens) == (4, 5)


def test_cohere_stream(co, caplog):
    caplog.set_level(logging.WARNING)
    events = list(co.chat_stream(model="command-a-03-2025", messages=[{"role": "user", "content": "hello there"}]))
    types = [e.type for e in events]
    assert types[0] == "message-start"
    assert types[-1] == "message-end"
    assert "content-start" in types and "content-end" in types
    text = "".join(e.delta.message.content.text for e in events if e.type == "content-delta")
    assert text == "Hello! You said: hello there"
    assert events[-1].delta.finish_reason == "COMPLETE"
    assert events[-1].delta.usage.tokens.output_tokens == 5
    _no_skipped_events(caplog)


def test_cohere_tool(co, caplog):
    caplog.set_level(logging.WARNING)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL_PARAMS}}]
    msgs = [{"role": "user", "content": "weather?"}]
    r = co.chat(model="mock-tool", messages=msgs, tools=tools)
    call = r.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert r.finish_reason == "TOOL_CALL"
    events = list(co.chat_stream(model="mock-tool", messages=msgs, tools=tools))
    start = next(e for e in events if e.type == "tool-call-start")
    assert start.delta.message.tool_calls.function.name == "get_weather"
    args = "".join(e.delta.message.tool_calls.function.arguments for e in events if e.type == "tool-call-delta")
    assert json.loads(args) == {"city": "Paris"}
    assert events[-1].delta.finish_reason == "TOOL_CALL"
    _no_skipped_events(caplog)


def test_cohere_embed(co):
    r = co.embed(
        model="embed-v4.0", texts=["alpha", "beta gamma"], input_type="search_document", embedding_types=["float"]
    )
    assert len(r.embeddings.float_) == 2
    assert len(r.embeddings.float_[0]) == 8
    assert r.meta.billed_units.input_tokens == 3


def test_cohere_errors(co):
    with pytest.raises(cohere.errors.TooManyRequestsError):
        co.chat(model="mock-429", messages=[{"role": "user", "content": "hi"}], request_options=NO_RETRY)
    with pytest.raises(cohere.errors.BadRequestError):
        co.chat(model="mock-context-length", messages=[{"role": "user", "content": "hi"}], request_options=NO_RETRY)
    bad = cohere.ClientV2(api_key="invalid", base_url=co._client_wrapper.get_base_url())
    with pytest.raises(cohere.errors.UnauthorizedError):
        bad.chat(model="c", messages=[{"role": "user", "content": "hi"}], request_options=NO_RETRY)
