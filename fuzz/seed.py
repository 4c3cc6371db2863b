#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from the fixtures in crates/*/testdata and examples/ when empty.

Each seed is a fixture behind the header bytes its target reads (see fuzz/src/lib.rs): selector
bytes pick the operation and model, a chunking byte picks where the stream is split. Bedrock's
fixture lists events; they are encoded here as AWS event-stream frames, as Bedrock sends them.
"""
import hashlib
import json
import pathlib
import struct
import sys
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
TD = ROOT / "crates/providers/testdata"
CORPUS = ROOT / "fuzz/corpus"
SPLITS = (0, 1, 7, 200)  # whole, and three chunkings


def read(rel):
    return (TD / rel).read_bytes()


def frame(headers, payload):
    """One event-stream message: prelude, its CRC, string headers, payload, message CRC."""
    h = b""
    for name, value in headers:
        n, v = name.encode(), value.encode()
        h += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(h) + len(payload) + 4
    prelude = struct.pack(">II", total, len(h))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + h + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def bedrock_stream():
    events = json.loads(read("bedrock/converse_stream_events.json"))["events"]
    frames = [
        frame(
            [(":event-type", ev), (":content-type", "application/json"), (":message-type", "event")],
            json.dumps(payload).encode(),
        )
        for ev, payload in events
    ]
    exception = frame(
        [(":exception-type", "throttlingException"), (":content-type", "application/json"),
         (":message-type", "exception")],
        b'{"message":"Too many requests, please wait before trying again."}',
    )
    return [b"".join(frames), b"".join(frames[:4]) + exception]


def seeds():
    sse = sorted(TD.glob("*/*.sse"))
    bedrock = bedrock_stream()
    out = {t: [] for t in (
        "sse", "bedrock_eventstream", "anthropic_ingress", "openai_request", "manifests_compile",
        "response_openai", "response_anthropic", "response_bedrock", "response_gemini",
        "response_cohere", "stream_openai", "stream_anthropic", "stream_bedrock", "stream_gemini",
        "stream_cohere",
    )}
    for s in SPLITS:
        out["sse"] += [bytes([s]) + f.read_bytes() for f in sse]
        out["bedrock_eventstream"] += [bytes([s]) + b for b in bedrock]
        out["stream_bedrock"] += [bytes([0, s]) + b for b in bedrock]
        out["stream_openai"] += [bytes([0, s]) + read(f) for f in
                                 ("anthropic/openai_text_stream.sse", "anthropic/openai_tool_stream.sse")]
        out["stream_anthropic"] += [bytes([0, s]) + read(f) for f in
                                    ("anthropic/text_stream.sse", "anthropic/tool_use_stream.sse")]
        out["stream_gemini"] += [bytes([0, s]) + read(f) for f in
                                 ("gemini/stream_text.sse", "gemini/stream_function_call.sse")]
        # Selector 4: Vertex's second model, Claude, which streams Anthropic events.
        out["stream_gemini"] += [bytes([4, s]) + read("anthropic/text_stream.sse")]
        out["stream_cohere"] += [bytes([0, s]) + read(f) for f in
                                 ("cohere/stream_text.sse", "cohere/stream_tool_call.sse")]
        out["anthropic_ingress"] += [bytes([2, s]) + read(f) for f in
                                     ("anthropic/openai_text_stream.sse", "anthropic/openai_tool_stream.sse")]
    out["anthropic_ingress"] += [bytes([0, 0]) + read("anthropic/ingress_request.json")]
    out["anthropic_ingress"] += [bytes([1, 0]) + read(f) for f in
                                 ("anthropic/openai_text_response.json", "anthropic/openai_tool_response.json")]
    for f in sorted(TD.glob("*/*request*.json")):
        flags = 1 if "embed" in f.name else 0
        out["openai_request"] += [bytes([flags]) + f.read_bytes(), bytes([flags | 4 | 8]) + f.read_bytes()]
    # Response selectors: operation (chat 0, embeddings 1) + 4 * the model index (fuzz/src/lib.rs).
    responses = {
        "response_openai": [(0, "openai/chat_response.json"), (0, "anthropic/openai_text_response.json"),
                            (0, "anthropic/openai_tool_response.json")],
        "response_anthropic": [(0, "anthropic/message_response.json"), (0, "anthropic/tool_use_response.json"),
                               (0, "anthropic/cache_usage_response.json")],
        "response_bedrock": [(0, "bedrock/converse_response_text.json"),
                             (0, "bedrock/converse_response_tool_use.json"),
                             (5, "bedrock/titan_embed_response.json"), (9, "bedrock/cohere_embed_response.json")],
        "response_gemini": [(0, "gemini/response_text.json"), (0, "gemini/response_function_call.json"),
                            (0, "gemini/response_safety_finish.json"), (0, "gemini/response_prompt_blocked.json"),
                            (5, "gemini/embed_content_response.json"),
                            (5, "gemini/batch_embed_contents_response.json"),
                            (9, "vertex/predict_embeddings_response.json"),
                            (4, "anthropic/message_response.json")],
        "response_cohere": [(0, "cohere/chat_response_text.json"), (0, "cohere/chat_response_tool_call.json"),
                            (5, "cohere/embed_response.json")],
    }
    errors = [b'{"error":{"message":"Rate limit reached","type":"rate_limit_error","code":"429"}}',
              b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
              b'{"message":"Too many requests","__type":"ThrottlingException"}']
    for target, files in responses.items():
        out[target] += [bytes([sel, 0]) + read(f) for sel, f in files]
        out[target] += [bytes([0, 29]) + e for e in errors]
    for d in sorted((ROOT / "examples").iterdir()):
        docs = [f.read_bytes() for f in sorted(d.glob("*.yaml"))]
        out["manifests_compile"] += docs + [b"\n---\n".join(docs)]
    return out


def main():
    for target, items in seeds().items():
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        if any(d.iterdir()):
            continue
        for item in items:
            (d / hashlib.sha1(item).hexdigest()).write_bytes(item)
        print(f"seeded {target}: {len(items)} inputs", file=sys.stderr)


if __name__ == "__main__":
    main()
