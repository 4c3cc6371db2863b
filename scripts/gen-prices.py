#!/usr/bin/env python3
"""Generates crates/config/data/prices.tsv, Switchyard's built-in price table, from the price
list that the `litellm` package ships (model_prices_and_context_window_backup.json in its wheel).

    python3 scripts/gen-prices.py                      # pinned litellm version, fetched with pip
    python3 scripts/gen-prices.py --version 1.111.0    # another version (then update PINNED)
    python3 scripts/gen-prices.py --json FILE          # a local copy of the JSON (no download)

Keeps the chat, completion, responses, embedding, rerank, audio and per-image models of the providers Switchyard
speaks to (see PROVIDERS), names each by the model id its provider's API takes (`gemini-2.5-pro`, not
`gemini/gemini-2.5-pro`), and writes one row per (provider type, model) with prices in USD per
million tokens (per million seconds of audio for transcription models billed by duration, per
million characters for speech models billed by character, per million images for image models
billed per image). Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import hashlib
import json
import math
import pathlib
import subprocess
import sys
import tempfile
import zipfile

# The litellm release the table is generated from. Newer releases add models; bump and rerun.
PINNED = "1.110.2"
JSON_IN_WHEEL = (
    "litellm/model_prices_and_context_window_backup.json",
    "model_prices_and_context_window.json",
)
OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/config/data/prices.tsv"
EXCERPT = OUT.parent.parent / "testdata/litellm-excerpt.json"
MODES = {"chat", "completion", "responses", "embedding", "rerank", "audio_transcription", "audio_speech",
         "image_generation"}

# Entries copied verbatim into EXCERPT, for the Rust tests to check table rows against their
# source (crates/config/src/prices/tests.rs lists the same keys).
EXCERPT_KEYS = [
    "gpt-4o",
    "text-embedding-3-small",
    "gpt-5.4",
    "claude-sonnet-4-5",
    "gemini/gemini-2.5-pro",
    "gemini-2.5-pro",
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "vertex_ai/claude-sonnet-4-5@20250929",
    "azure/gpt-4o",
    "deepseek-chat",
    "mistral/mistral-large-latest",
    "groq/openai/gpt-oss-120b",
    "command-a-03-2025",
    "together_ai/openai/gpt-oss-20b",
    "fireworks_ai/accounts/fireworks/models/qwen3-4b-instruct-2507",
    "xai/grok-4.3",
]

# litellm provider -> (Switchyard provider type, key prefix to strip, whether keys without the
# prefix are skipped). Listed in order of preference when two sources give the same provider
# type and model different prices.
PROVIDERS = [
    ("openai", "openai", "openai/", False),
    ("text-completion-openai", "openai", "openai/", False),
    ("azure", "azure-openai", "azure/", True),
    ("azure_text", "azure-openai", "azure/", True),
    ("anthropic", "anthropic", "anthropic/", False),
    ("bedrock_converse", "bedrock", "bedrock/", False),
    ("bedrock", "bedrock", "bedrock/", False),
    ("vertex_ai-language-models", "vertex", "vertex_ai/", False),
    ("vertex_ai", "vertex", "vertex_ai/", False),
    ("vertex_ai-anthropic_models", "vertex", "vertex_ai/", False),
    ("vertex_ai-embedding-models", "vertex", "vertex_ai/", False),
    ("vertex_ai-text-models", "vertex", "vertex_ai/", False),
    ("gemini", "gemini", "gemini/", False),
    ("mistral", "mistral", "mistral/", False),
    ("groq", "groq", "groq/", False),
    ("xai", "xai", "xai/", False),
    ("deepseek", "deepseek", "deepseek/", False),
    ("cohere_chat", "cohere", "cohere/", False),
    ("cohere", "cohere", "cohere/", False),
    ("together_ai", "together", "together_ai/", True),
    ("fireworks_ai", "fireworks", "fireworks_ai/", True),
    ("fireworks_ai-embedding-models", "fireworks", "fireworks_ai/", True),
    ("openrouter", "openrouter", "openrouter/", True),
    ("ollama", "ollama", "ollama/", True),
    ("voyage", "voyage", "voyage/", False),
    ("jina_ai", "jina", "jina_ai/", False),
]

COLUMNS = [
    "provider",
    "model",
    "input",
    "output",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "reasoning",
    "context_window",
    "max_output",
    "tier_above",
    "tier_input",
    "tier_output",
    "tier_cached_input",
    "tier_cache_write",
    "tier_cache_write_1h",
]


def fetch(version: str) -> tuple[bytes, str]:
    """The price JSON inside the litellm wheel of `version`, and its path in the wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             f"litellm=={version}", "-d", tmp],
            check=True,
        )
        wheels = sorted(pathlib.Path(tmp).glob("litellm-*.whl"))
        if not wheels:
            sys.exit(f"pip downloaded no litellm wheel for {version}")
        with zipfile.ZipFile(wheels[0]) as z:
            names = set(z.namelist())
            for name in JSON_IN_WHEEL:
                if name in names:
                    return z.read(name), name
    sys.exit(f"litellm {version}: none of {JSON_IN_WHEEL} in the wheel")


def per_million(v) -> decimal.Decimal | None:
    """USD per token (a JSON number) as USD per million tokens, exactly as written."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if not math.isfinite(v) or v < 0:
        return None
    return (decimal.Decimal(repr(v)) * 1_000_000).normalize()


def tokens(v) -> int | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        return None
    return int(v)


def cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, decimal.Decimal):
        s = format(v, "f")
        return s.rstrip("0").rstrip(".") if "." in s else s
    return str(v)


def tier_of(entry: dict) -> tuple[int, str] | None:
    """The long-context threshold (`..._above_200k_tokens`) of an entry, with its key suffix."""
    found = set()
    for key in entry:
        if key.startswith("input_cost_per_token_above_") and key.endswith("k_tokens"):
            k = key[len("input_cost_per_token_above_"):-len("k_tokens")]
            if k.isdigit():
                found.add(int(k))
    if not found:
        return None
    if len(found) > 1:
        # One tier per model is all the JSON has today; take the lowest if that changes.
        print(f"warning: several long-context tiers {sorted(found)}; using the lowest", file=sys.stderr)
    k = min(found)
    return k * 1000, f"_above_{k}k_tokens"


# The models of Switchyard's own mock provider (`type: mock`, the offline quickstart and the
# tests), priced so the quickstart shows spend; not from litellm.
MOCK_ROWS = [
    {"provider": "mock", "model": "mock-model", "input": decimal.Decimal("1"), "output": decimal.Decimal("2"),
     "cached_input": decimal.Decimal("0.5"), "context_window": 8192, "max_output": 4096},
    {"provider": "mock", "model": "mock-embedding", "input": decimal.Decimal("0.1"),
     "output": decimal.Decimal("0"), "cached_input": decimal.Decimal("0.1"), "context_window": 8192},
]


def audio_row(kind: str, model: str, e: dict) -> dict | None:
    """An audio model, in the units the gateway counts (crates/providers/src/audio.rs): a
    transcription model that reports token usage (GPT-4o transcribe) by its audio input and
    output tokens; one billed by duration (Whisper) by seconds, counted as prompt tokens; a
    speech model by input characters, counted the same way. Speech billed by tokens is left out:
    the gateway counts characters."""
    if e.get("mode") == "audio_transcription":
        audio_tokens = per_million(e.get("input_cost_per_audio_token"))
        if audio_tokens is not None and per_million(e.get("output_cost_per_token")) is not None:
            inp, out = audio_tokens, per_million(e.get("output_cost_per_token"))
        else:
            inp, out = per_million(e.get("input_cost_per_second")), decimal.Decimal(0)
    else:
        inp, out = per_million(e.get("input_cost_per_character")), decimal.Decimal(0)
    if inp is None:
        return None
    return {"provider": kind, "model": model, "input": inp, "output": out}


def image_row(kind: str, model: str, e: dict) -> dict | None:
    """An image model billed per image (Bedrock's Nova Canvas and Titan Image, Imagen): the
    gateway counts each image as one completion token, so the price of a million images is the
    output price. Image models billed by tokens or pixels (GPT Image, DALL-E) are left out."""
    per_image = per_million(e.get("output_cost_per_image"))
    if per_image is None or e.get("input_cost_per_token") is not None:
        return None
    return {"provider": kind, "model": model, "input": decimal.Decimal(0), "output": per_image}


def row(kind: str, model: str, e: dict) -> dict | None:
    if e.get("mode") in ("audio_transcription", "audio_speech"):
        return audio_row(kind, model, e)
    if e.get("mode") == "image_generation":
        return image_row(kind, model, e)
    inp = per_million(e.get("input_cost_per_token"))
    per_query = per_million(e.get("input_cost_per_query"))
    if e.get("mode") == "rerank" and per_query:
        # Billed per search (Cohere, Bedrock): the gateway counts a search unit as a prompt
        # token, so the price of a million searches is the input price.
        inp = per_query
    if inp is None:
        return None  # priced per second, character or image: not a token model
    out = per_million(e.get("output_cost_per_token")) or decimal.Decimal(0)
    r = {
        "provider": kind,
        "model": model,
        "input": inp,
        "output": out,
        "cached_input": per_million(e.get("cache_read_input_token_cost")),
        "cache_write": per_million(e.get("cache_creation_input_token_cost")),
        "cache_write_1h": per_million(e.get("cache_creation_input_token_cost_above_1hr")),
        "reasoning": per_million(e.get("output_cost_per_reasoning_token")),
        "context_window": tokens(e.get("max_input_tokens")) or tokens(e.get("max_tokens")),
        "max_output": tokens(e.get("max_output_tokens")),
    }
    if r["reasoning"] == out:
        r["reasoning"] = None  # the same as output: leave it to the default
    tier = tier_of(e)
    if tier is not None:
        above, suffix = tier
        t_in = per_million(e.get("input_cost_per_token" + suffix))
        t_out = per_million(e.get("output_cost_per_token" + suffix))
        if t_in is not None:
            r["tier_above"] = above
            r["tier_input"] = t_in
            r["tier_output"] = t_out if t_out is not None else out
            r["tier_cached_input"] = per_million(e.get("cache_read_input_token_cost" + suffix))
            r["tier_cache_write"] = per_million(e.get("cache_creation_input_token_cost" + suffix))
            r["tier_cache_write_1h"] = per_million(
                e.get("cache_creation_input_token_cost_above_1hr" + suffix)
            )
    return r


def prices_of(r: dict) -> tuple:
    return tuple(r.get(c) for c in COLUMNS[2:])


def build(data: dict) -> list[dict]:
    rank = {p[0]: i for i, p in enumerate(PROVIDERS)}
    spec = {p[0]: p[1:] for p in PROVIDERS}
    candidates: dict[tuple[str, str], list[tuple[tuple, dict]]] = {}
    for key, e in data.items():
        if not isinstance(e, dict) or e.get("mode") not in MODES:
            continue
        source = e.get("litellm_provider")
        if source not in spec:
            continue
        kind, prefix, prefix_required = spec[source]
        if key.startswith(prefix):
            model = key[len(prefix):]
        elif prefix_required:
            continue  # size-bucket pseudo-models (`together-ai-up-to-4b`) and the like
        else:
            model = key
        # Keys with more segments than the provider's own ids carry a region, a deployment
        # type or an invocation path (`azure/eu/...`, `bedrock/us-east-1/...`): their ids are
        # not what a client sends, and the plain entry has the standard price.
        if kind in ("azure-openai", "bedrock", "vertex", "openai", "anthropic", "gemini") and "/" in model:
            continue
        if not model or any(c in model for c in "\t\n\r"):
            continue
        r = row(kind, model, e)
        if r is None:
            continue
        # Prefer the preferred source, then the key written the way the provider's API names
        # the model (no litellm prefix), then the key itself (deterministic).
        order = (rank[source], 0 if key == model else 1, key)
        candidates.setdefault((kind, model), []).append((order, r))
    rows = []
    for (kind, model), cands in sorted(candidates.items()):
        cands.sort(key=lambda c: c[0])
        chosen = cands[0][1]
        others = {prices_of(c[1]) for c in cands[1:]} - {prices_of(chosen)}
        if others:
            print(f"note: {kind} {model}: {len(cands)} entries with different prices; "
                  f"kept {cands[0][0][2]}", file=sys.stderr)
        rows.append(chosen)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", default=PINNED, help=f"litellm version (default {PINNED})")
    ap.add_argument("--json", type=pathlib.Path,
                    help="read this JSON file (from litellm==VERSION) instead of downloading")
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    ap.add_argument("--excerpt", type=pathlib.Path, default=EXCERPT)
    ap.add_argument("--date", default=datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
                    help="date recorded in the header (default today, UTC)")
    args = ap.parse_args()

    if args.json:
        raw, source_path = args.json.read_bytes(), args.json.name
    else:
        raw, source_path = fetch(args.version)
    data = json.loads(raw)
    rows = build(data) + MOCK_ROWS

    lines = [
        "# Switchyard's built-in price table. Generated by scripts/gen-prices.py; do not edit by hand:",
        "# override prices per Provider (spec.pricing) or per backend (spec.backends[].pricing).",
        f"# source: PyPI package litellm=={args.version}, file {source_path}",
        f"# source sha256: {hashlib.sha256(raw).hexdigest()}",
        f"# generated: {args.date}",
        "# Prices are USD per million tokens (audio: per million seconds for transcription models",
        "# billed by duration, per million characters for speech). An empty cell is unknown or the",
        "# default: cached_input,",
        "# cache_write and cache_write_1h default to input (cache_write_1h to cache_write), reasoning",
        "# to output; the tier_* prices apply to the whole request when its prompt has more than",
        "# tier_above tokens, each empty one defaulting to the base price of its kind.",
        "\t".join(COLUMNS),
    ]
    for r in rows:
        lines.append("\t".join(cell(r.get(c)) for c in COLUMNS))
    args.out.write_text("\n".join(lines) + "\n")
    missing = [k for k in EXCERPT_KEYS if k not in data]
    if missing:
        sys.exit(f"excerpt keys missing from the source, pick others: {missing}")
    excerpt = {
        "_source": f"litellm=={args.version} {source_path}, entries copied by scripts/gen-prices.py",
        **{k: data[k] for k in EXCERPT_KEYS},
    }
    args.excerpt.parent.mkdir(parents=True, exist_ok=True)
    args.excerpt.write_text(json.dumps(excerpt, indent=1, sort_keys=True) + "\n")
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r["provider"]] = kinds.get(r["provider"], 0) + 1
    print(f"wrote {len(rows)} rows to {args.out}: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))


if __name__ == "__main__":
    main()
