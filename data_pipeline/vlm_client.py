"""Chat-completion calls to any OpenAI-compatible VLM endpoint, made safe to run at scale.

One :class:`VLMClient` per run wraps the real ``openai.AsyncOpenAI`` client and adds what a paid,
rate-limited API needs:

* bounded concurrency (an ``asyncio.Semaphore``);
* retries with exponential back-off and jitter on 429 (honouring ``Retry-After``), 5xx, timeouts and
  connection errors; other 4xx answers are not retried;
* a per-request timeout;
* the answer cache (:mod:`data_pipeline.answer_cache`): an answer is persisted as soon as it arrives and
  a request already answered is never sent again, so a killed run resumes for free;
* the usage and cost log (:mod:`data_pipeline.usage`);
* JSON answers parsed with repair (:mod:`data_pipeline.json_repair`); unrecoverable ones are counted.

The API key is read from an environment variable (``OPENAI_API_KEY`` unless told otherwise) when the
client is built; it is never stored on the settings object, logged, or written to any file.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from data_pipeline.answer_cache import AnswerCache, request_hash
from data_pipeline.json_repair import MalformedAnswer, ParsedAnswer, parse_json_answer
from data_pipeline.usage import Prices, UsageLog

if TYPE_CHECKING:
    import openai

logger = logging.getLogger(__name__)

ENV_BASE_URL = "TINYGG_VLM_BASE_URL"
ENV_MODEL = "TINYGG_VLM_MODEL"
ENV_API_KEY = "OPENAI_API_KEY"
ENV_PRICE_INPUT = "TINYGG_VLM_PRICE_INPUT"
ENV_PRICE_OUTPUT = "TINYGG_VLM_PRICE_OUTPUT"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o"


class VLMUnavailable(RuntimeError):
    """A request failed after every retry (or with a non-retryable error): the image is left pending."""


class VLMConfigurationError(RuntimeError):
    """The endpoint refused us for a reason no retry can fix (bad key, unknown model, wrong URL)."""


@dataclass(frozen=True)
class VLMSettings:
    """Where and how to call the VLM. The key itself is not a field: only the variable that holds it."""

    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    api_key_env: str = ENV_API_KEY
    concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    temperature: float = 0.2
    max_tokens: int = 2048
    max_image_side: int = 1024
    json_mode: bool = False  # ask for response_format json_object (endpoints that support it)
    prices: Prices = field(default_factory=Prices)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1; got {self.concurrency}")
        if self.timeout_s <= 0:
            raise ValueError(f"--timeout must be > 0 seconds; got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"--max-retries must be >= 0; got {self.max_retries}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"--base-url must start with http:// or https://; got {self.base_url!r}")
        if self.max_image_side < 32:
            raise ValueError(f"--max-image-side must be >= 32 pixels; got {self.max_image_side}")

    @classmethod
    def from_env(cls, **overrides: Any) -> VLMSettings:
        """Settings from TINYGG_VLM_* variables, then ``overrides`` (flags; ``None`` values ignored)."""
        values: dict[str, Any] = {}
        if os.environ.get(ENV_BASE_URL):
            values["base_url"] = os.environ[ENV_BASE_URL]
        if os.environ.get(ENV_MODEL):
            values["model"] = os.environ[ENV_MODEL]
        price_in = os.environ.get(ENV_PRICE_INPUT)
        price_out = os.environ.get(ENV_PRICE_OUTPUT)
        prices = overrides.pop("prices", None)
        if prices is None and (price_in or price_out):
            prices = Prices(float(price_in or 0), float(price_out or 0))
        if prices is not None:
            values["prices"] = prices
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def image_data_url(image: Image.Image, max_side: int) -> str:
    """JPEG data URL of ``image``, downscaled so its longer side is at most ``max_side``.

    Only the VLM sees this copy: boxes stay in the original image's pixels.
    """
    img = image.convert("RGB")
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BICUBIC
        )
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def user_message(text: str, image_url: str | None) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if image_url is not None:
        content.append({"type": "image_url", "image_url": {"url": image_url}})
    return {"role": "user", "content": content}


def _import_openai() -> Any:
    """The ``openai`` package, imported on first use so ``tinygg`` starts without the ``data`` extra."""
    try:
        import openai
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the VLM stages need the openai client: pip install 'tinygroundinggpt[data]' "
            "(or pip install openai)"
        ) from None
    return openai


def _retry_after_seconds(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own back-off


class VLMClient:
    """Async VLM access with caching, retries, usage logging and JSON repair (see module docstring)."""

    def __init__(
        self,
        settings: VLMSettings,
        cache: AnswerCache,
        usage: UsageLog,
        client: openai.AsyncOpenAI | None = None,
    ):
        self.settings = settings
        self.cache = cache
        self.usage = usage
        self.stats: Counter[str] = Counter()
        self._semaphore: asyncio.Semaphore | None = None
        self._client = client

    def _openai(self) -> openai.AsyncOpenAI:
        openai = _import_openai()
        if self._client is None:
            key = os.environ.get(self.settings.api_key_env)
            if not key:
                logger.warning(
                    "$%s is not set: sending requests without an API key (fine for local "
                    "servers such as vLLM; hosted APIs will answer 401)",
                    self.settings.api_key_env,
                )
                key = "not-set"
            # Retries are ours (counted, logged, Retry-After aware), so the SDK's own are switched off.
            self._client = openai.AsyncOpenAI(
                api_key=key, base_url=self.settings.base_url, timeout=self.settings.timeout_s, max_retries=0
            )
        return self._client

    def _sem(self) -> asyncio.Semaphore:
        if self._semaphore is None:  # created inside the running loop
            self._semaphore = asyncio.Semaphore(self.settings.concurrency)
        return self._semaphore

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.settings.backoff_max_s)
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2**attempt)
        return ceiling * (0.5 + random.random() / 2)  # jitter in [ceiling/2, ceiling]

    async def ask(self, image_id: str, stage: str, messages: list[dict[str, Any]]) -> str:
        """The model's answer text for ``messages``: from the cache, or requested (and cached at once)."""
        payload: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }
        if self.settings.json_mode:
            payload["response_format"] = {"type": "json_object"}
        req_hash = request_hash(payload)
        cached = self.cache.get(image_id, stage, req_hash)
        if cached is not None:
            self.stats["cache_hits"] += 1
            return cached
        async with self._sem():
            cached = self.cache.get(image_id, stage, req_hash)  # a concurrent twin may have answered
            if cached is not None:
                self.stats["cache_hits"] += 1
                return cached
            return await self._request(image_id, stage, req_hash, payload)

    async def _request(self, image_id: str, stage: str, req_hash: str, payload: dict[str, Any]) -> str:
        openai = _import_openai()
        client = self._openai()
        start = time.monotonic()
        for attempt in range(self.settings.max_retries + 1):
            retry_after: float | None = None
            self.stats["requests_sent"] += 1
            try:
                response = await client.chat.completions.create(**payload)
            except openai.RateLimitError as exc:
                self.stats["rate_limited"] += 1
                retry_after = _retry_after_seconds(exc)
                reason = "429 rate limited"
            except openai.APITimeoutError:
                self.stats["timeouts"] += 1
                reason = f"timed out after {self.settings.timeout_s:g} s"
            except openai.APIConnectionError as exc:
                self.stats["connection_errors"] += 1
                reason = f"connection error ({type(exc).__name__})"
            except openai.APIStatusError as exc:
                if exc.status_code in (401, 403, 404):
                    raise VLMConfigurationError(
                        f"{self.settings.base_url} answered {exc.status_code} for model "
                        f"{self.settings.model!r}: check --base-url, --model and ${self.settings.api_key_env}"
                    ) from None
                if exc.status_code < 500 and exc.status_code not in (408, 409):
                    self.stats["failed"] += 1
                    raise VLMUnavailable(
                        f"{image_id} [{stage}]: the endpoint rejected the request with "
                        f"{exc.status_code}; not retried"
                    ) from None
                self.stats["server_errors"] += 1
                retry_after = _retry_after_seconds(exc)
                reason = f"HTTP {exc.status_code}"
            else:
                choice = response.choices[0] if response.choices else None
                answer = (choice.message.content or "") if choice is not None else ""
                finish = choice.finish_reason if choice is not None else None
                # Persist before anything else: a kill from here on costs nothing on restart.
                self.cache.put(
                    image_id, stage, req_hash, answer, model=self.settings.model, finish_reason=finish
                )
                usage = response.usage
                self.usage.record(
                    image_id=image_id,
                    stage=stage,
                    req_hash=req_hash,
                    model=self.settings.model,
                    prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                    completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                    latency_s=time.monotonic() - start,
                    attempts=attempt + 1,
                )
                self.stats["answered"] += 1
                return answer
            if attempt == self.settings.max_retries:
                break
            delay = self._backoff(attempt, retry_after)
            self.stats["retries"] += 1
            logger.info(
                "%s [%s]: %s; retry %d/%d in %.2f s",
                image_id,
                stage,
                reason,
                attempt + 1,
                self.settings.max_retries,
                delay,
            )
            await asyncio.sleep(delay)
        self.stats["failed"] += 1
        raise VLMUnavailable(
            f"{image_id} [{stage}]: no answer after {self.settings.max_retries + 1} attempts "
            f"(last: {reason}); the image stays pending and a rerun will try again"
        )

    async def ask_json(self, image_id: str, stage: str, messages: list[dict[str, Any]]) -> ParsedAnswer:
        """:meth:`ask`, then parse the answer as JSON (repaired if needed). Raises ``MalformedAnswer``."""
        answer = await self.ask(image_id, stage, messages)
        try:
            parsed = parse_json_answer(answer)
        except MalformedAnswer:
            self.stats["json_rejected"] += 1
            raise
        if parsed.repaired:
            self.stats["json_repaired"] += 1
        return parsed

    async def aclose(self) -> None:
        """Close the HTTP client; the next call (possibly in a new event loop) opens a fresh one."""
        if self._client is not None:
            await self._client.close()
        self._client = None
        self._semaphore = None
