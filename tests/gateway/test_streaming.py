"""Streams are forwarded as they are produced, never buffered."""

import time

import openai

from harness import copy_example


def test_chunks_arrive_before_the_upstream_finishes(tmp_path, gateway_on):
    config = copy_example("quickstart", tmp_path)
    providers = config / "providers.yaml"
    providers.write_text(providers.read_text().replace("tokensPerSecond: 200", "tokensPerSecond: 10"))
    gw = gateway_on(config)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-switchyard-demo", max_retries=0)
    start = time.monotonic()
    arrivals = []
    stream = client.chat.completions.create(
        model="demo-chat",
        messages=[{"role": "user", "content": "one two three four five six"}],
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
    # "Hello! You said: one two three four five six": 9 words at 10 tokens/s.
    assert len(arrivals) == 9
    assert arrivals[0] < 0.5, arrivals
    assert arrivals[-1] - arrivals[0] > 0.6, arrivals
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert min(gaps) > 0.05, gaps
