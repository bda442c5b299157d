"""Realistic, deterministic models for ``GET /v2/gen-ai/models``, as the real API sends them.

Each model populates the fields of ``apiModelPublic`` the way DigitalOcean's gRPC gateway does:
fields at their zero value (``False``, ``0``, ``""``, empty lists) are left out, at every level
except inside ``benchmark_score`` (a free-form JSON object that keeps its zeros); nested objects
such as ``agreement`` are always present. Across a catalog every field of the spec shows up, and
some models lack ``is_foundational``, ``thinking``, ``url``, ``parameter_count`` and friends
because their value is zero. ``context_window`` is an int64 and so travels as a JSON string.
Timestamps are RFC 3339 in UTC and cycle through 0, 3, 6 and 9 fraction digits.

The same ``(i, seed)`` always gives the same model, in any process.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from etl.config import USECASES as USECASES  # the spec's enum, as the fake API serves it

PROVIDERS: tuple[str, ...] = (
    "MODEL_PROVIDER_DIGITALOCEAN",
    "MODEL_PROVIDER_ANTHROPIC",
    "MODEL_PROVIDER_OPENAI",
)
"""The ``apiModelProvider`` enum."""

LIFECYCLE_STATUSES: tuple[str, ...] = ("active", "public-preview", "deprecated")
"""The lifecycle statuses this catalog uses."""

_NAMESPACE = uuid.UUID("6f1c3a52-9d0e-4b8a-9c61-2f4e8d7b5a10")
_EPOCH = datetime(2024, 1, 8, 9, 30, tzinfo=UTC)
_DO, _ANTHROPIC, _OPENAI = PROVIDERS


@dataclass(frozen=True)
class _Agreement:
    key: str
    name: str
    description: str
    url: str

    def as_json(self) -> dict[str, str]:
        return {
            "uuid": str(uuid.uuid5(_NAMESPACE, f"agreement:{self.key}")),
            "name": self.name,
            "description": self.description,
            "url": self.url,
        }


_AGREEMENTS: dict[str, _Agreement] = {
    a.key: a
    for a in (
        _Agreement(
            "llama",
            "Llama 3.3 Community License Agreement",
            "Meta grants a non-exclusive, worldwide, royalty-free licence to use, reproduce and "
            "distribute the Llama Materials, subject to the Acceptable Use Policy.",
            "https://www.llama.com/llama3_3/license/",
        ),
        _Agreement(
            "apache",
            "Apache License 2.0",
            "A permissive licence whose main conditions require preservation of copyright and "
            "licence notices; contributors grant an express grant of patent rights.",
            "https://www.apache.org/licenses/LICENSE-2.0",
        ),
        _Agreement(
            "mit",
            "MIT License",
            "A short and simple permissive licence with conditions only requiring preservation "
            "of copyright and licence notices.",
            "https://opensource.org/license/mit",
        ),
        _Agreement(
            "anthropic",
            "Anthropic Commercial Terms of Service",
            "Terms governing access to Claude models through DigitalOcean's serverless "
            "inference, including usage policies and data handling commitments.",
            "https://www.anthropic.com/legal/commercial-terms",
        ),
        _Agreement(
            "openai",
            "OpenAI Services Agreement",
            "Terms governing use of OpenAI models resold through DigitalOcean, including the "
            "usage policies and the service-specific terms.",
            "https://openai.com/policies/services-agreement/",
        ),
    )
}


_AGREEMENT_JSON = {key: agreement.as_json() for key, agreement in _AGREEMENTS.items()}


@dataclass(frozen=True)
class _Family:
    """What the models built on one base model have in common."""

    slug: str
    name: str
    provider: str
    type: str
    params: float  # billions; 0 for undisclosed (closed models)
    context: int
    agreement: str
    major: int
    blurb: str
    source_url: str = ""
    thinking: bool = False
    efforts: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ("text",)
    outputs: tuple[str, ...] = ("text",)

    @property
    def open_weights(self) -> bool:
        return self.provider == _DO


_FAMILIES: tuple[_Family, ...] = (
    _Family(
        "llama3.3-70b-instruct", "Llama 3.3 Instruct (70B)", _DO, "chat", 70.6, 131072, "llama",
        3, "Meta's multilingual instruction-tuned model, tuned for dialogue and tool use.",
        "https://huggingface.co/meta-llama/Llama-3.3-70B-Instruct",
    ),
    _Family(
        "llama3-8b-instruct", "Llama 3.1 Instruct (8B)", _DO, "chat", 8.03, 131072, "llama",
        3, "A small, fast Llama for latency-sensitive chat and classification workloads.",
        "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct",
    ),
    _Family(
        "mistral-nemo-instruct-2407", "Mistral NeMo Instruct", _DO, "chat", 12.2, 128000, "apache",
        1, "Built with NVIDIA — a 12B model with a large context window and a Tekken tokenizer.",
        "https://huggingface.co/mistralai/Mistral-Nemo-Instruct-2407",
    ),
    _Family(
        "deepseek-r1-distill-llama-70b", "DeepSeek R1 Distill Llama 70B", _DO, "reasoning", 70.6,
        32768, "mit", 1, "Distilled from DeepSeek-R1; it thinks step by step before answering.",
        "https://huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
    ),
    _Family(
        "qwen2.5-coder-32b-instruct", "Qwen 2.5 Coder Instruct (32B)", _DO, "coding", 32.8, 32768,
        "apache", 2, "Code generation, code reasoning and fixing across 40+ languages.",
        "https://huggingface.co/Qwen/Qwen2.5-Coder-32B-Instruct",
    ),
    _Family(
        "llama-guard-3-8b", "Llama Guard 3 (8B)", _DO, "chat", 8.03, 131072, "llama", 3,
        "A safeguard model that classifies prompts and responses against a hazard taxonomy.",
        "https://huggingface.co/meta-llama/Llama-Guard-3-8B",
    ),
    _Family(
        "anthropic-claude-3.7-sonnet", "Claude 3.7 Sonnet", _ANTHROPIC, "chat", 0.0, 200000,
        "anthropic", 3, "Anthropic's hybrid reasoning model with an extended thinking mode.",
        thinking=True, inputs=("text", "image"),
    ),
    _Family(
        "anthropic-claude-3.5-haiku", "Claude 3.5 Haiku", _ANTHROPIC, "chat", 0.0, 200000,
        "anthropic", 3, "Anthropic's fastest model, for real-time and high-volume tasks.",
    ),
    _Family(
        "openai-gpt-4o", "GPT-4o", _OPENAI, "chat", 0.0, 128000, "openai", 4,
        "OpenAI's versatile flagship model accepting text and image input.",
        inputs=("text", "image"),
    ),
    _Family(
        "openai-o3-mini", "o3-mini", _OPENAI, "reasoning", 0.0, 200000, "openai", 3,
        "A small reasoning model with selectable reasoning effort for STEM tasks.",
        efforts=("low", "medium", "high"),
    ),
    _Family(
        "openai-gpt-image-1", "GPT Image 1", _OPENAI, "image", 0.0, 32000, "openai", 1,
        "Natively multimodal image generation and editing from text and image prompts.",
        inputs=("text", "image"), outputs=("image",),
    ),
    _Family(
        "gte-large-en-v1.5", "GTE Large EN v1.5", _DO, "embedding", 0.434, 8192, "apache", 1,
        "A general text embedding model for retrieval with long-context support.",
        "https://huggingface.co/Alibaba-NLP/gte-large-en-v1.5", outputs=("embedding",),
    ),
    _Family(
        "all-mini-lm-l6-v2", "All MiniLM L6 v2", _DO, "embedding", 0.0227, 256, "apache", 2,
        "A compact sentence-transformers model mapping sentences to a 384-dimensional space.",
        "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2", outputs=("embedding",),
    ),
    _Family(
        "bge-reranker-v2-m3", "BGE Reranker v2 M3", _DO, "reranking", 0.568, 8192, "apache", 2,
        "A multilingual cross-encoder that scores query-passage pairs for reranking.",
        "https://huggingface.co/BAAI/bge-reranker-v2-m3", outputs=("score",),
    ),
    _Family(
        "fal-ai/flux/schnell", "FLUX.1 [schnell]", _DO, "image", 12.0, 512, "apache", 1,
        "A 12B rectified-flow transformer generating images from text in 1 to 4 steps.",
        "https://huggingface.co/black-forest-labs/FLUX.1-schnell", outputs=("image",),
    ),
    _Family(
        "fal-ai/elevenlabs/tts/multilingual-v2", "ElevenLabs Multilingual v2", _DO, "audio",
        0.0, 10000, "mit", 2, "Lifelike speech synthesis in 29 languages with emotional range.",
        outputs=("audio",),
    ),
    _Family(
        "fal-ai/kling-video/v2/master", "Kling 2.0 Master", _DO, "video", 0.0, 2500, "mit", 2,
        "Text-to-video and image-to-video generation with fluid motion at 1080p.",
        inputs=("text", "image"), outputs=("video",),
    ),
)  # fmt: skip

_FILLER = (
    "It is served from DigitalOcean's serverless inference fleet in several regions, with "
    "per-token billing and no infrastructure to manage.",
    "Requests are authenticated with a model access key and are compatible with the OpenAI "
    "client libraries, so existing code needs only a new base URL.",
    "Prompts and completions are not stored or used for training; logs keep only token counts "
    "for billing and rate limiting.",
    "Use it from agents, knowledge bases and the playground; settings such as temperature and "
    "the maximum number of output tokens can be tuned per request.",
    "Throughput is shared across tenants; for predictable latency at high volume consider a "
    "dedicated deployment of the same weights.",
    "Benchmark scores below are as published by the model's authors and were not reproduced "
    "by DigitalOcean.",
    "Availability may differ between regions while a new version rolls out.",
    "Rate limits apply per team and per model; requests over the limit receive HTTP 429 with a "
    "Retry-After header, and usage is visible in the control panel within minutes.",
    "The model card, licence and acceptable use policy linked from the agreement apply to all "
    "outputs, including those generated through agents and the playground.",
    "Older versions stay callable for at least ninety days after a successor is released, and "
    "deprecation dates are announced in the changelog ahead of time.",
)


def model_uuid(i: int, *, seed: int = 0) -> str:
    """The uuid of model ``i`` of the catalog for ``seed``.

    Args:
        i: Index of the model in the catalog.
        seed: Catalog seed.

    Returns:
        A uuid string, stable across processes.
    """
    return str(uuid.uuid5(_NAMESPACE, f"model:{seed}:{i}"))


def make_model(i: int, *, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """Build model ``i`` of the catalog for ``seed`` as the API would send it in JSON.

    Args:
        i: Index of the model; part of its ``id`` (``llama3.3-70b-instruct-{i}``).
        seed: Catalog seed; a different seed gives different uuids, families and values.
        **overrides: Top-level keys to replace or add after generation; a value of None
            sets the key to JSON ``null``.

    Returns:
        The model as a JSON-ready dict, zero-valued fields omitted.
    """
    rng = random.Random(f"model:{seed}:{i}")
    family = _FAMILIES[_family_index(i, seed)]
    variant = _is_variant(i, seed)
    major = family.major
    minor = rng.choice((0, 0, 1, 2, 3))
    patch = rng.choice((0, 0, 0, 1, 2, 5))
    # Spread over two years whatever the catalog size, so no timestamp lies in the future.
    hours = (37 * i) % (2 * 365 * 24) + rng.randrange(24)
    created = _EPOCH + timedelta(hours=hours, seconds=rng.randrange(3600))
    updated = created + timedelta(days=rng.randrange(0, 200), seconds=rng.randrange(86400))

    model: dict[str, Any] = {
        "uuid": model_uuid(i, seed=seed),
        "id": f"{family.slug}-{i}",
        "name": f"{family.name} (fine-tuned {i})" if variant else family.name,
        "description": _description_lead(family, variant, rng),
        "agreement": dict(_AGREEMENT_JSON[family.agreement]),
        "version": {"major": major, "minor": minor, "patch": patch},
        "created_at": _timestamp(created, i, rng),
        "updated_at": _timestamp(updated, i + 2, rng),
        "capabilities": _capabilities(family),
        "modalities": {"input": list(family.inputs), "output": list(family.outputs)},
        "endpoints": _endpoints(family),
        "reasoning_efforts": list(family.efforts),
        "settings": _settings(family, rng),
        "pricing": _pricing(family, rng),
        "provider": family.provider,
        "lifecycle_status": rng.choices(LIFECYCLE_STATUSES, weights=(14, 4, 2))[0],
        "type": family.type,
        "model_availability": _availability(family, variant, rng),
        "thinking": family.thinking,
        "parameter_count": family.params,
        "context_window": str(family.context),
        **_chunk_sizes(family),
        "benchmark_score": _benchmarks(family, rng),
        "url": _download_url(family, variant, i),
        "parent_uuid": _parent_uuid(i, seed) if variant else "",
        "is_foundational": not variant and family.open_weights,
        "upload_complete": not variant or rng.random() < 0.75,
    }
    model = _omit_zero(model)
    _pad_description(model, rng.randrange(2200, 2800), rng)
    model.update(overrides)
    return model


def make_catalog(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Build models ``0 .. n-1`` of the catalog for ``seed``.

    Args:
        n: Number of models.
        seed: Catalog seed.

    Returns:
        The models, in index order.
    """
    return [make_model(i, seed=seed) for i in range(n)]


def evolve(n: int, steps: int, *, seed: int = 0) -> list[list[dict[str, Any]]]:
    """A catalog over ``steps`` observations, changing between them as the real one does.

    Between consecutive catalogs, deterministically: a model is renamed, one gets a version
    bump, one a price change, one is deprecated, one new model is added, one present model is
    removed, one removed model comes back, and every few steps an agreement is renamed.
    """
    rng = random.Random(seed)
    pool = make_catalog(n + steps, seed=seed)
    current = [dict(m) for m in pool[:n]]
    removed: list[dict[str, Any]] = []
    catalogs = [[dict(m) for m in current]]
    for step in range(1, steps):
        current[rng.randrange(len(current))]["name"] = f"Renamed {step}"
        bumped = current[rng.randrange(len(current))]
        version = dict(bumped.get("version", {}))
        version["minor"] = version.get("minor", 0) + 1
        bumped["version"] = version
        priced = current[rng.randrange(len(current))]
        priced["pricing"] = {**priced.get("pricing", {}), "output_price_per_million": 1.0 + step}
        current[rng.randrange(len(current))]["lifecycle_status"] = "deprecated"
        if step % 2 == 0:
            owner = current[rng.randrange(len(current))]
            if "agreement" in owner:
                renamed = {**owner["agreement"], "name": f"Licence rev {step}"}
                for model in current:
                    if model.get("agreement", {}).get("uuid") == renamed["uuid"]:
                        model["agreement"] = renamed
        if removed:
            current.append(removed.pop(0))
        removed.append(current.pop(rng.randrange(len(current))))
        current.append(dict(pool[n + step]))
        catalogs.append([dict(m) for m in current])
    return catalogs


def usecases_for(model: dict[str, Any]) -> list[str]:
    """The usecases the fake API lists ``model`` under: 1 to 3 values of ``apiModelUsecase``.

    The first is the model type's main usecase; the others are drawn deterministically from
    the model's identity. Works on any dict, even one without ``uuid`` or ``type``.

    Args:
        model: A model dict.

    Returns:
        The usecases, without duplicates.
    """
    kind = model.get("type")
    candidates = _USECASES_BY_TYPE.get(kind if isinstance(kind, str) else "", ("UNKNOWN",))
    primary, *rest = (f"MODEL_USECASE_{name}" for name in candidates)
    count = 1 + _digest(model, "usecases") % 3
    extras = random.Random(_digest(model, "extras")).sample(rest, min(count - 1, len(rest)))
    return [primary, *extras]


def is_public(model: dict[str, Any]) -> bool:
    """Whether ``model`` is publicly available (about two models in three).

    Args:
        model: A model dict.

    Returns:
        Whether a ``public_only=true`` listing includes it.
    """
    return _digest(model, "public") % 3 != 0


_USECASES_BY_TYPE: dict[str, tuple[str, ...]] = {
    "chat": ("AGENT", "SERVERLESS", "TEXT", "FINETUNED", "EVALUATION_JUDGE", "GUARDRAIL"),
    "reasoning": ("REASONING", "AGENT", "SERVERLESS", "TEXT"),
    "coding": ("CODING", "AGENT", "SERVERLESS"),
    "embedding": ("KNOWLEDGEBASE", "SERVERLESS"),
    "reranking": ("RERANKING", "KNOWLEDGEBASE"),
    "image": ("SERVERLESS",),
    "audio": ("AUDIO", "SERVERLESS"),
    "video": ("SERVERLESS",),
}


def _digest(model: dict[str, Any], purpose: str) -> int:
    """A stable integer from a model's identity (never Python's salted ``hash``)."""
    identity = model.get("uuid") or model.get("id") or ""
    data = f"{purpose}:{identity}".encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def _draw(purpose: str, i: int, seed: int) -> int:
    """A stable 64-bit draw, cheaper than seeding a ``random.Random`` (parents look back)."""
    data = f"{purpose}:{seed}:{i}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _family_index(i: int, seed: int) -> int:
    return _draw("family", i, seed) % len(_FAMILIES)


def _is_variant(i: int, seed: int) -> bool:
    """Whether model ``i`` is a fine-tuned upload built on another model (about 1 in 5)."""
    family = _FAMILIES[_family_index(i, seed)]
    return family.open_weights and _draw("variant", i, seed) % 5 == 0


def _parent_uuid(i: int, seed: int) -> str:
    """The closest earlier foundational model of the same family, else an outside base model."""
    family = _family_index(i, seed)
    for j in range(i - 1, max(-1, i - 65), -1):
        if _family_index(j, seed) == family and not _is_variant(j, seed):
            return model_uuid(j, seed=seed)
    return str(uuid.uuid5(_NAMESPACE, f"base:{_FAMILIES[family].slug}"))


def _timestamp(moment: datetime, cycle: int, rng: random.Random) -> str:
    digits = (0, 3, 6, 9)[cycle % 4]
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits == 0:
        return base + "Z"
    fraction = str(rng.randrange(1, 10**digits)).zfill(digits)
    return f"{base}.{fraction}Z"


def _description_lead(family: _Family, variant: bool, rng: random.Random) -> str:
    if variant and rng.random() < 0.3:
        return ""  # uploads often come without a description: the field is then omitted
    lead = f"{family.name}: {family.blurb}"
    if variant:
        lead = f"A customer fine-tune of {family.name} for domain-specific answers. {lead}"
    return lead


def _pad_description(model: dict[str, Any], target: int, rng: random.Random) -> None:
    """Append boilerplate sentences to a non-empty description until the JSON is ~``target``."""
    if "description" not in model:
        return
    size = len(json.dumps(model))
    sentences = rng.sample(_FILLER, len(_FILLER))
    parts = [model["description"]]
    while sentences and size < target:
        sentence = sentences.pop()
        parts.append(sentence)
        size += len(sentence) + 1  # the fillers are ASCII: one character each in JSON
    model["description"] = " ".join(parts)


def _capabilities(family: _Family) -> list[str]:
    by_type = {
        "chat": ["inference", "tool_calling", "streaming", "structured_output"],
        "reasoning": ["inference", "reasoning", "streaming", "tool_calling"],
        "coding": ["inference", "code_completion", "streaming", "tool_calling"],
        "embedding": ["vectorization"],
        "reranking": ["reranking"],
        "image": ["image_generation"],
        "audio": ["speech_synthesis"],
        "video": ["video_generation"],
    }
    capabilities = list(by_type[family.type])
    if "image" in family.inputs and family.type != "image":
        capabilities.append("vision")
    if family.thinking:
        capabilities.append("extended_thinking")
    return capabilities


def _endpoints(family: _Family) -> list[dict[str, Any]]:
    inputs = [f"input_{m}" for m in family.inputs]
    outputs = [f"output_{m}" for m in family.outputs]
    if family.type in ("chat", "reasoning", "coding"):
        return [
            {"endpoint": "/chat/completions", "capabilities": [*inputs, *outputs, "streaming"]},
            {"endpoint": "/responses", "capabilities": [*inputs, *outputs, "tool_calling"]},
        ]
    path = {
        "embedding": "/embeddings",
        "reranking": "/rerank",
        "image": "/images/generations",
        "audio": "/audio/speech",
        "video": "/async-invoke",
    }[family.type]
    return [{"endpoint": path, "capabilities": [*inputs, *outputs]}]


def _settings(family: _Family, rng: random.Random) -> list[dict[str, Any]]:
    if family.type in ("chat", "reasoning", "coding"):
        settings: list[dict[str, Any]] = [
            {
                "name": "temperature",
                "type": "number",
                "default_value": rng.choice((0.7, 0.6, 1.0)),
                "min": 0.0,
                "max": 2.0 if family.provider == _OPENAI else 1.0,
                "step": 0.1,
            },
            {
                "name": "max_tokens",
                "type": "number",
                "default_value": 2048.0,
                "min": 1.0,
                "max": float(min(family.context, 65536)),
                "step": 1.0,
            },
            {
                "name": "top_p",
                "type": "number",
                "default_value": 1.0,
                "min": 0.0,
                "max": 1.0,
                "step": 0.01,
            },
        ]
        if family.efforts:
            settings.append(
                {
                    "name": "reasoning_effort",
                    "type": "dropdown",
                    "default_string": "medium",
                    "options": list(family.efforts),
                }
            )
        return settings
    if family.type in ("image", "video"):
        return [
            {
                "name": "resolution",
                "type": "dropdown",
                "default_string": "1024x1024" if family.type == "image" else "1920x1080",
                "options": ["512x512", "1024x1024", "1536x1024", "1920x1080"],
            },
            {"name": "num_outputs", "type": "number", "default_value": 1.0, "min": 1.0,
             "max": 4.0, "step": 1.0},
        ]  # fmt: skip
    if family.type == "audio":
        return [
            {
                "name": "voice",
                "type": "dropdown",
                "default_string": "Rachel",
                "options": ["Rachel", "Aria", "Roger", "Sarah"],
            }
        ]
    return []  # embeddings and rerankers have no playground settings: the key is omitted


def _price(rng: random.Random, low: float, high: float) -> float:
    return round(rng.uniform(low, high), 4)


def _pricing(family: _Family, rng: random.Random) -> dict[str, float]:
    if family.type == "image" and family.provider == _OPENAI:
        return {
            "text_input_price_per_million": 5.0,
            "text_cache_read_input_price_per_million": 1.25,
            "text_output_price_per_million": 10.0,
            "image_input_price_per_million": 10.0,
            "image_cache_read_input_price_per_million": 2.5,
            "image_output_price_per_million": 40.0,
        }
    if family.type == "image":
        key = rng.choice(("price_per_megapixel", "price_per_image"))
        return {key: _price(rng, 0.003, 0.05)}
    if family.type == "video":
        return {"price_per_video": _price(rng, 0.2, 1.4), "price_per_second": 0.28}
    if family.type == "audio":
        return {"price_per_thousand_characters": 0.1, "price_per_audio": _price(rng, 0.01, 0.1)}
    if family.type in ("embedding", "reranking"):
        return {"input_price_per_million": _price(rng, 0.009, 0.1)}
    input_price = _price(rng, 0.1, 3.0)
    pricing = {
        "input_price_per_million": input_price,
        "output_price_per_million": round(input_price * rng.choice((1.0, 3.0, 4.0, 5.0)), 4),
    }
    if rng.random() < 0.6 or family.provider != _DO:
        cache_read = round(input_price / 10, 4)
        pricing["cache_read_input_price_per_million"] = cache_read
        pricing["input_cache_read"] = cache_read / 1_000_000
    if family.provider == _ANTHROPIC:
        pricing["cache_write_5m_input_price_per_million"] = round(input_price * 1.25, 4)
        pricing["cache_write_1h_input_price_per_million"] = round(input_price * 2, 4)
    if family.type == "reasoning":
        pricing["reasoning_price_per_million"] = pricing["output_price_per_million"]
    return pricing


def _availability(family: _Family, variant: bool, rng: random.Random) -> str:
    if variant:
        return rng.choice(("dedicated", ""))  # "" while an upload is still being provisioned
    return "serverless" if not family.open_weights else rng.choice(("serverless", "dedicated"))


def _chunk_sizes(family: _Family) -> dict[str, int]:
    if family.type != "embedding":
        return {}
    largest = min(family.context, 8192)
    return {
        "kb_min_chunk_size": 100,
        "kb_default_chunk_size": min(500, largest),
        "kb_max_chunk_size": largest,
    }


def _benchmarks(family: _Family, rng: random.Random) -> dict[str, Any] | None:
    if family.type in ("image", "audio", "video"):
        return None  # no published scores: the Struct is unset and the key omitted
    if family.type in ("embedding", "reranking"):
        return {
            "mteb": {
                "average": round(rng.uniform(55, 66), 2),
                "retrieval": round(rng.uniform(40, 58), 2),
                "tasks": 56,
            },
            "source": "https://huggingface.co/spaces/mteb/leaderboard",
        }
    return {
        "mmlu": {"score": round(rng.uniform(0.6, 0.9), 3), "shots": 5},
        "humaneval": {"pass@1": round(rng.uniform(0.4, 0.92), 3), "pass@10": None},
        "arena": {"elo": rng.randrange(1050, 1350), "ties": 0, "votes": rng.randrange(10**5)},
        "evaluated_at": "2025-02-14",
    }


def _download_url(family: _Family, variant: bool, i: int) -> str:
    if variant:
        return f"https://genai-uploads.example.com/models/{family.slug}/{i}/weights.tar"
    return family.source_url


def _omit_zero(message: dict[str, Any]) -> dict[str, Any]:
    """Drop zero-valued fields like the gateway does; ``benchmark_score`` is a Struct and kept.

    Whole doubles come out as ints: Go's protojson writes ``2048``, not ``2048.0``.
    """
    result: dict[str, Any] = {}
    for key, value in message.items():
        kind = type(value)
        if kind is dict:
            result[key] = value if key == "benchmark_score" else _omit_zero(value)
        elif kind is list:
            if value:
                result[key] = [_omit_zero(v) if type(v) is dict else v for v in value]
        elif kind is float:
            if value:
                result[key] = int(value) if value.is_integer() else value
        elif value is not None and value is not False and value != "" and value != 0:
            result[key] = value
    return result
