"""Every provider type, end to end: the official `openai` and `anthropic` SDKs talk to the gateway,
which translates to each provider's native API on the mock provider and back.

The routes come from examples/providers (pointed at a mock provider on a free port), plus, per
provider, routes whose upstream model names select the mock's fault models."""

import time

import anthropic
import httpx
import openai
import pytest
import yaml

from harness import Gateway, MockProvider, REPO

KEY = "sk-switchyard-demo"
CHAT = [
    "openai", "azure-openai", "anthropic", "bedrock", "vertex", "gemini", "mistral", "groq", "xai",
    "deepseek", "cohere", "together", "fireworks", "openrouter", "ollama", "vllm", "openai-compatible",
]
EMBED = ["openai", "azure-openai", "bedrock", "gemini", "cohere", "voyage", "mock"]
FAULTS = {"tool": "mock-tool", "429": "mock-429", "400": "mock-context-length", "slow": "mock-slow", "cut": "mock-cut"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mock = MockProvider()
    config = tmp_path_factory.mktemp("providers")
    for f in (REPO / "examples" / "providers").glob("*.yaml"):
        (config / f.name).write_text(f.read_text().replace("127.0.0.1:9999", f"127.0.0.1:{mock.port}"))
    extra = []
    for t in CHAT:
        for suffix, model in FAULTS.items():
            extra.append({
                "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
                "metadata": {"name": f"{t}-{suffix}", "namespace": "default"},
                "spec": {"model": f"{t}-{suffix}", "retries": {"attempts": 0},
                         "backends": [{"providerRef": {"name": t}, "model": model}]},
            })
    (config / "faults.yaml").write_text(yaml.safe_dump_all(extra))
    gw = Gateway(config)
    yield gw, mock
    gw.stop()
    mock.stop()


@pytest.fixture
def oai(env):
    return openai.OpenAI(base_url=env[0].url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def claude(env):
    return anthropic.Anthropic(base_url=env[0].url, api_key=KEY, max_retries=0)


@pytest.mark.parametrize("provider", CHAT + ["mock"])
def test_openai_sdk_chat(oai, provider):
    r = oai.chat.completions.create(
        model=f"{provider}-chat", messages=[{"role": "user", "content": "ping from the sdk"}]
    )
    assert "ping from the sdk" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens >= 4 and r.usage.completion_tokens >= 1


@pytest.mark.parametrize("provider", CHAT + ["mock"])
def test_openai_sdk_stream(oai, provider):
    stream = oai.chat.completions.create(
        model=f"{provider}-chat",
        messages=[{"role": "user", "content": "stream it"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert "stream it" in text
    assert finish == "stop"
    if provider == "mistral":
        # Mistral's API takes no `stream_options` (it reports usage unasked on its own servers), so
        # the gateway does not send it, and the OpenAI-format mock then sends no usage chunk.
        assert usage is None
    else:
        assert usage is not None and usage.completion_tokens >= 1


@pytest.mark.parametrize("provider", [p for p in CHAT if p not in ("ollama",)])
def test_openai_sdk_tool_call(oai, provider):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    r = oai.chat.completions.create(
        model=f"{provider}-tool", messages=[{"role": "user", "content": "weather in Paris?"}], tools=tools
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert '"city"' in call.function.arguments and "Paris" in call.function.arguments
    assert r.choices[0].finish_reason == "tool_calls"
    # Streamed: the argument fragments join into the same JSON.
    args, name = "", None
    for chunk in oai.chat.completions.create(
        model=f"{provider}-tool", messages=[{"role": "user", "content": "weather?"}], tools=tools, stream=True
    ):
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                name = tc.function.name or name
                args += tc.function.arguments or ""
    assert name == "get_weather"
    assert "Paris" in args


# A whole conversation with the parameters most clients send, in OpenAI's ranges: the mock refuses
# what each real API refuses, so every translation must turn this into a request its provider takes.
CONVERSATION = [
    {"role": "developer", "content": "Answer briefly."},
    {"role": "system", "content": [{"type": "text", "text": "Use metric units."}]},
    {"role": "user", "content": "weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    {"role": "user", "content": [{"type": "text", "text": "and tomorrow?"}]},
]
WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", CHAT)
def test_a_full_conversation_reaches_every_provider(oai, provider, stream):
    r = oai.chat.completions.create(
        model=f"{provider}-chat", messages=CONVERSATION, tools=WEATHER, tool_choice="auto",
        temperature=1.5, top_p=1, max_tokens=200, stop=["END"], user="user-42", stream=stream,
    )
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in r if c.choices)
    else:
        text = r.choices[0].message.content
    assert "and tomorrow?" in text


def test_sampling_numbers_are_brought_into_each_providers_range(env, oai):
    """OpenAI takes temperature up to 2; Claude and Bedrock Converse up to 1, Cohere's `p` up to
    0.99. The gateway sends the nearest value the provider takes instead of a refused request."""
    mock = env[1]
    sent = {
        "anthropic": lambda b: (b["temperature"], b["top_p"]),
        "bedrock": lambda b: (b["inferenceConfig"]["temperature"], b["inferenceConfig"]["topP"]),
        "cohere": lambda b: (b["temperature"], b["p"], b["frequency_penalty"]),
    }
    expected = {"anthropic": (1, 1), "bedrock": (1, 1), "cohere": (1.5, 0.99, 0)}
    for provider, read in sent.items():
        penalty = {"frequency_penalty": -0.5} if provider == "cohere" else {}
        oai.chat.completions.create(model=f"{provider}-chat", messages=[{"role": "user", "content": "hi"}],
                                    temperature=1.5, top_p=1, **penalty)
        body = httpx.get(f"{mock.url}/mock/last-request", params={"provider": provider}).json()
        assert read(body) == expected[provider], (provider, body)


CLAUDE_CONVERSATION = [
    {"role": "user", "content": "weather in Paris?"},
    {"role": "assistant", "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C and sunny"},
        {"type": "text", "text": "and tomorrow?"}]},
]


@pytest.mark.parametrize("provider", CHAT)
def test_a_full_claude_conversation_reaches_every_provider(claude, provider):
    m = claude.messages.create(
        model=f"{provider}-chat", max_tokens=200, system=[{"type": "text", "text": "Answer briefly."}],
        messages=CLAUDE_CONVERSATION, extra_body={"temperature": 0.7, "top_p": 0.9}, stop_sequences=["END"],
        metadata={"user_id": "user-42"},
        tools=[{"name": "get_weather", "description": "Weather by city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        tool_choice={"type": "auto"},
    )
    assert "and tomorrow?" in m.content[0].text


@pytest.mark.parametrize("provider", ["openai", "azure-openai", "mistral", "groq", "xai"])
def test_claude_only_parameters_are_refused_by_the_gateway_for_strict_openai_apis(claude, provider):
    """`top_k` and `thinking` are Claude's; OpenAI, Azure, Mistral, Groq and xAI refuse fields they
    do not know. The gateway says so itself (naming dropUnsupportedParams) instead of sending them."""
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model=f"{provider}-chat", max_tokens=100, extra_body={"top_k": 5},
                               messages=[{"role": "user", "content": "hi"}])
    assert "top_k" in str(e.value) and "dropUnsupportedParams" in str(e.value)


def test_claude_only_parameters_reach_claude(claude):
    m = claude.messages.create(model="anthropic-chat", max_tokens=2048, messages=[{"role": "user", "content": "hi"}],
                               extra_body={"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024}})
    assert "hi" in m.content[0].text


@pytest.mark.parametrize("provider", CHAT)
def test_openai_sdk_error_classes(oai, provider):
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model=f"{provider}-429", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=f"{provider}-400", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("provider", EMBED)
def test_openai_sdk_embeddings(oai, provider):
    r = oai.embeddings.create(model=f"{provider}-embed", input="hello world")
    assert len(r.data) == 1 and len(r.data[0].embedding) > 0


@pytest.mark.parametrize("provider", CHAT + ["mock"])
def test_anthropic_sdk_messages(claude, provider):
    m = claude.messages.create(
        model=f"{provider}-chat", max_tokens=100, messages=[{"role": "user", "content": "hello claude sdk"}]
    )
    assert m.type == "message" and m.role == "assistant"
    assert "hello claude sdk" in m.content[0].text
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens >= 1


@pytest.mark.parametrize("provider", CHAT + ["mock"])
def test_anthropic_sdk_stream(claude, provider):
    with claude.messages.stream(
        model=f"{provider}-chat", max_tokens=100, messages=[{"role": "user", "content": "stream claude"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "stream claude" in text
    assert final.stop_reason == "end_turn"
    # No usage from a Mistral upstream stream (see test_openai_sdk_stream).
    assert (final.usage.output_tokens >= 1) == (provider != "mistral")


def test_anthropic_sdk_error_classes(env, claude):
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model="anthropic-429", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="bedrock-400", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    bad = anthropic.Anthropic(base_url=env[0].url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="anthropic-chat", max_tokens=10, messages=[{"role": "user", "content": "x"}])


def test_client_disconnect_cancels_the_upstream(env, oai):
    gw, mock = env
    before = mock.stats()["streams_cancelled"]
    # The gateway answers a stream once its first token arrived (so it can still retry before
    # that); a client that gives up first closes the connection while the upstream is pending.
    impatient = oai.with_options(timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(
            model="openai-slow", messages=[{"role": "user", "content": "x"}], stream=True
        )
    deadline = time.monotonic() + 5
    while mock.stats()["streams_cancelled"] <= before:
        assert time.monotonic() < deadline, "the mock provider never saw the upstream request end"
        time.sleep(0.05)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "bedrock", "gemini", "cohere"])
def test_cut_upstream_stream_ends_with_an_error_event(oai, provider):
    start = time.monotonic()
    text = ""
    with pytest.raises(openai.APIError) as e:
        for chunk in oai.chat.completions.create(
            model=f"{provider}-cut", messages=[{"role": "user", "content": "a b c d e f g h"}], stream=True
        ):
            for c in chunk.choices:
                text += c.delta.content or ""
    assert time.monotonic() - start < 10
    assert text, "chunks before the cut should have arrived"
    assert "backend" in str(e.value)
