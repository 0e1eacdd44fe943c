"""The OpenAI Images renderer: GPT image models over the official SDK's ``AsyncOpenAI``.

Every OpenAI error is mapped into the Easel error family here, once; ``str()`` of what
this module raises is shown to Discord members, so it never carries API detail. The
operator learns the detail from the log, with API keys scrubbed (``bot.redact``).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

import aiohttp
import openai
from openai import AsyncOpenAI, DefaultAioHttpClient, Omit, omit
from openai.types.images_response import ImagesResponse

from bot.errors import ConfigError, ContentRefused, RenderFailed
from bot.redact import scrub_secrets
from bot.renderers.base import (
    Capabilities,
    Operation,
    ProgressCallback,
    RenderRequest,
    RenderResult,
    Usage,
)
from bot.retry import RetryPolicy

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-image-1-mini"
DEFAULT_QUALITY = "auto"
DEFAULT_OUTPUT_FORMAT = "png"

# The three sizes every GPT image model accepts (SDK 3.54 ``size`` docs).
STANDARD_SIZES: tuple[tuple[int, int], ...] = ((1024, 1024), (1536, 1024), (1024, 1536))
# Extra sizes offered on models that take arbitrary WIDTHxHEIGHT: all divisible by 16,
# aspect within 1:3..3:1, and no larger than 2560x1440, above which OpenAI calls sizes
# experimental.
FLEXIBLE_EXTRA_SIZES: tuple[tuple[int, int], ...] = (
    (1536, 864),
    (864, 1536),
    (2048, 1152),
    (1152, 2048),
    (2560, 1440),
    (1440, 2560),
)
BASE_QUALITIES: tuple[str, ...] = ("low", "medium", "high", "auto")
EXTENDED_QUALITIES: tuple[str, ...] = ("low", "medium", "high", "xhigh", "max", "auto")
# Easel stores and posts PNG, JPEG and WebP only; the newer gif/svg outputs are not offered.
FORMATS: tuple[str, ...] = ("png", "jpeg", "webp")
COMPRESSIBLE_FORMATS = frozenset({"jpeg", "webp"})
MAX_COUNT = 4
MAX_PROMPT_CHARS = 32000
MODERATION_MODEL = "omni-moderation-latest"

RETIRED_ADVICE = "use gpt-image-1-mini (cheap) or gpt-image-1.5"


@dataclass(frozen=True)
class ModelSpec:
    """What one GPT image model accepts on the Images API."""

    sizes: tuple[tuple[int, int], ...] = STANDARD_SIZES
    qualities: tuple[str, ...] = BASE_QUALITIES
    max_n: int = 10
    formats: tuple[str, ...] = FORMATS
    output_compression: bool = True
    transparent_background: bool = True
    edits: bool = True
    flexible_sizes: bool = False


_GPT_IMAGE_2 = ModelSpec(
    sizes=STANDARD_SIZES + FLEXIBLE_EXTRA_SIZES,
    flexible_sizes=True,
    # OpenAI ended gpt-image-2's transparent-background preview on 2026-09-30.
    transparent_background=False,
)
_GPT_IMAGE_2_5 = ModelSpec(
    sizes=STANDARD_SIZES + FLEXIBLE_EXTRA_SIZES,
    flexible_sizes=True,
    qualities=EXTENDED_QUALITIES,
)
# The 2.6 family is documented with xhigh/max, but the API reference does not (yet) list
# it among the arbitrary-size models, so only the standard sizes are offered; its
# transparency support is undocumented, so it is assumed absent.
_GPT_IMAGE_2_6 = ModelSpec(qualities=EXTENDED_QUALITIES, transparent_background=False)

# Sources: the installed SDK (openai 3.54: types/image_model.py, image_generate_params.py,
# image_edit_params.py) and OpenAI's API reference for POST /images/generations (ids,
# retirements, sizes, n 1-10, xhigh/max on 2.5, compression only for jpeg/webp, edits on
# every GPT image model); OpenAI's gpt-image-2 model page (default snapshot); vendor notes
# for the gpt-image-2 transparency shutdown and the 2.6 quality tiers. Re-check on each
# SDK upgrade.
MODELS: Mapping[str, ModelSpec] = {
    "gpt-image-1-mini": ModelSpec(),
    "gpt-image-1.5": ModelSpec(),
    "gpt-image-2": _GPT_IMAGE_2,
    "gpt-image-2-2026-04-21": _GPT_IMAGE_2,
    "gpt-image-2.5-flare": _GPT_IMAGE_2_5,
    "gpt-image-2.5-flare-2026-09-08": _GPT_IMAGE_2_5,
    "gpt-image-2.5-sunburst": _GPT_IMAGE_2_5,
    "gpt-image-2.5-sunburst-2026-09-08": _GPT_IMAGE_2_5,
    "gpt-image-2.6-flare": _GPT_IMAGE_2_6,
    "gpt-image-2.6-sunburst": _GPT_IMAGE_2_6,
    # Tracks the model ChatGPT uses; assumed to take only the common parameters.
    "chatgpt-image-latest": ModelSpec(transparent_background=False),
}

# A retired id answers 404 model_not_found, so the loader refuses it at start.
RETIRED: Mapping[str, str] = {
    "dall-e-2": "retired by OpenAI on 2026-05-12",
    "dall-e-3": "retired by OpenAI on 2026-05-12",
    "gpt-image-1": "shut down by OpenAI on 2026-10-23",
}

# Other OpenAI-compatible servers run other models: assume only what every GPT image
# model accepts.
UNKNOWN_MODEL = ModelSpec(transparent_background=False)

OutputFormat = Literal["png", "webp", "jpeg"]
Quality = Literal["low", "medium", "high", "xhigh", "max", "auto"]


def model_spec(model: str) -> ModelSpec:
    """Return the table entry for ``model``, or conservative defaults for an unknown id."""
    return MODELS.get(model, UNKNOWN_MODEL)


@dataclass(frozen=True)
class SettingsCheck:
    """The outcome of ``validate_settings``: errors stop start-up, warnings are logged."""

    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the settings can be used."""
        return not self.errors


def _options(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def validate_settings(
    model: str,
    quality: str = DEFAULT_QUALITY,
    output_format: str = DEFAULT_OUTPUT_FORMAT,
    output_compression: int | None = None,
) -> SettingsCheck:
    """Check the operator's OpenAI settings against the model table; messages name key and fix."""
    errors: list[str] = []
    warnings: list[str] = []
    model = model.strip()
    if not model:
        return SettingsCheck(errors=(f"openai.model is empty; set it to {DEFAULT_MODEL!r} or another model",))
    if model in RETIRED:
        errors.append(f"openai.model = {model!r} is retired ({RETIRED[model]}); {RETIRED_ADVICE}")
        return SettingsCheck(errors=tuple(errors))
    spec = MODELS.get(model)
    if spec is None:
        spec = UNKNOWN_MODEL
        warnings.append(
            f"openai.model = {model!r} is not a known OpenAI image model; assuming an "
            f"OpenAI-compatible server that accepts sizes "
            f"{_options(tuple(f'{w}x{h}' for w, h in spec.sizes))} and qualities "
            f"{_options(spec.qualities)} (for OpenAI itself, {RETIRED_ADVICE})"
        )
    if quality not in spec.qualities:
        errors.append(
            f"openai.quality = {quality!r} is not accepted by {model}; use one of {_options(spec.qualities)}"
        )
    if output_format not in spec.formats:
        errors.append(
            f"images.output_format = {output_format!r} is not supported with {model}; "
            f"use one of {_options(spec.formats)}"
        )
    if output_compression is not None:
        if not 0 <= output_compression <= 100:
            errors.append(f"openai.output_compression = {output_compression} must be 0 to 100")
        elif output_format not in COMPRESSIBLE_FORMATS:
            errors.append(
                f"openai.output_compression only applies to jpeg or webp output; remove it or set "
                f"images.output_format to 'webp' or 'jpeg' (it is {output_format!r})"
            )
        elif not spec.output_compression:
            errors.append(f"openai.output_compression is not accepted by {model}; remove it")
    return SettingsCheck(errors=tuple(errors), warnings=tuple(warnings))


def check_model(
    model: str,
    quality: str = DEFAULT_QUALITY,
    output_format: str = DEFAULT_OUTPUT_FORMAT,
    output_compression: int | None = None,
) -> list[str]:
    """Return the problems that must stop start-up (empty when the settings are usable)."""
    return list(validate_settings(model, quality, output_format, output_compression).errors)


def build_client(api_key: str, base_url: str | None, timeout_s: float) -> AsyncOpenAI:
    """Build the ``AsyncOpenAI`` client the renderer uses; the caller closes it."""
    if not api_key.strip():
        raise ConfigError("openai.api_key is empty; set it or the OPENAI_API_KEY environment variable")
    if timeout_s <= 0:
        raise ConfigError("openai.timeout_s must be greater than 0")
    # max_retries=0: bot.retry is the one retry policy. With the SDK's own retries left
    # on (2 by default) every attempt of ours would become up to three requests, with two
    # stacked backoffs and an unpredictable bill.
    # The SDK's aiohttp transport costs about a third less CPU per call than its default one,
    # and Easel already runs on aiohttp (discord.py).
    return AsyncOpenAI(
        api_key=api_key,
        base_url=base_url or None,
        timeout=timeout_s,
        max_retries=0,
        http_client=DefaultAioHttpClient(timeout=timeout_s),
    )


def _refused(err: BaseException) -> bool:
    """Whether the connection was refused or its host not found, rather than slow.

    The SDK's aiohttp transport reports every failed connect as a timeout; the aiohttp error it
    wraps says which it was, and members should read "could not be reached" for a refusal.
    """
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectorError) and not isinstance(cause, TimeoutError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def fold_negative(prompt: str, negative: str) -> str:
    """Fold a negative prompt into the prompt text, since the OpenAI API has no negative prompt."""
    negative = negative.strip()
    if not negative:
        return prompt
    return f"{prompt}\nAvoid: {negative}"


# The Images API takes no strength: below this a variation is asked for as a close one, from it
# as a free one (Vary (Subtle) and Vary (Strong) fall either side with their default strengths).
FREE_VARIATION_FROM = 0.5


def variation_prompt(original: str, extra: str, strength: float = 0.6) -> str:
    """Build the edit instruction for a variation of an image made from ``original``, close or free by ``strength``."""
    original = original.strip()
    extra = extra.strip()
    if strength < FREE_VARIATION_FROM:
        first = (
            "Create a close variation of this image: keep its subject, composition, colours and style; "
            "change only small details."
        )
    else:
        first = (
            "Create a free variation of this image: keep its subject and feel, and freely change the "
            "composition, pose, lighting and details."
        )
    lines = [first]
    if original:
        lines.append(f"The image was made from this prompt: {original}")
    if extra:
        lines.append(f"In this variation: {extra}")
    return "\n".join(lines)


def _sniff_mime(data: bytes) -> tuple[str, str]:
    """Return a file name and MIME type for an encoded image (the SDK needs both)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "source.jpg", "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "source.webp", "image/webp"
    return "source.png", "image/png"


def _error_code(err: openai.APIError) -> str | None:
    """Return the API's error code, from the exception or its body."""
    if err.code:
        return err.code
    body = err.body
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            code = inner.get("code")
            if code is not None:
                return str(code)
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Return the server's requested wait in seconds from retry-after-ms / retry-after."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(float(value) / divisor, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(parsed.timestamp() - time.time(), 0.0)
    return None


MSG_SAFETY = "OpenAI's safety system declined this prompt. Try rewording it."
MSG_MISCONFIGURED = "The image service is misconfigured; the operator has been told."
MSG_OUT_OF_CREDIT = (
    "This server's image budget is used up, so no images can be made for now. The operator has been told."
)
MSG_BUSY = "The image service is busy right now. Please try again in a minute."
MSG_SERVER = "The image service had a problem. Please try again in a minute."
MSG_TIMEOUT = "The image service took too long to answer. Please try again."
MSG_UNREACHABLE = "The image service could not be reached. Please try again in a minute."
MSG_REJECTED = "The image service could not make this image. Try a different prompt or settings."
MSG_NO_IMAGE = "The image service sent back no usable image. Please try again."

_SAFETY_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})


class OpenAIRenderer:
    """Renders GENERATE and VARY requests with a GPT image model through the Images API."""

    def __init__(
        self,
        client: AsyncOpenAI,
        model: str = DEFAULT_MODEL,
        *,
        quality: str = DEFAULT_QUALITY,
        output_format: str = DEFAULT_OUTPUT_FORMAT,
        output_compression: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        # The client must come from build_client (max_retries=0); see the note there.
        problems = check_model(model, quality, output_format, output_compression)
        if problems:
            raise ConfigError("; ".join(problems))
        self._client = client
        self._model = model
        self._spec = model_spec(model)
        self._quality = quality
        self._format = cast(OutputFormat, output_format)
        self._compression = output_compression
        self._retry = retry or RetryPolicy()
        key = getattr(client, "api_key", "")
        self._secrets: tuple[str, ...] = (key,) if isinstance(key, str) and key else ()
        ops = (Operation.GENERATE, Operation.VARY) if self._spec.edits else (Operation.GENERATE,)
        self._capabilities = Capabilities(
            sizes=self._spec.sizes,
            max_count=min(MAX_COUNT, self._spec.max_n),
            variation=self._spec.edits,
            # OpenAI has no negative prompt; render() folds it into the prompt as "Avoid: …".
            negative_prompt=False,
            # OpenAI takes no seed, so results cannot be reproduced.
            seeded=False,
            qualities=self._spec.qualities,
            max_batch=1,
            progress=False,
            cancellable=False,
            operations=ops,
            # gpt-image-2 models take any WIDTHxHEIGHT in multiples of 16 up to 3:1; --ar aims at
            # about 1 MP, the area of the standard sizes.
            size_step=16 if self._spec.flexible_sizes else 0,
        )

    @property
    def name(self) -> str:
        """The backend's name as members see it."""
        return "openai"

    @property
    def model(self) -> str:
        """The OpenAI model id this renderer uses."""
        return self._model

    @property
    def capabilities(self) -> Capabilities:
        """What this renderer accepts (sizes and qualities from the model table)."""
        return self._capabilities

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()

    def health(self) -> tuple[tuple[str, str], ...]:
        """Model, quality and endpoint host (never the key) for /status."""
        return (
            ("Model", self._model),
            ("Quality", self._quality),
            ("Endpoint", self._client.base_url.host or "api.openai.com"),
        )

    async def render(self, request: RenderRequest, progress: ProgressCallback | None = None) -> RenderResult:
        """Render one request under the retry policy; raise RenderFailed with a member-safe message."""
        if request.operation not in self._capabilities.operations:
            raise RenderFailed(f"The OpenAI backend cannot {request.operation.value} images.")
        quality = request.quality or self._quality
        if quality not in self._spec.qualities:
            raise RenderFailed(
                f"Quality {quality!r} is not available here; choose one of {_options(self._spec.qualities)}."
            )
        if request.operation is Operation.VARY and not request.source:
            raise RenderFailed("There is no source image to make a variation of.")

        async def attempt() -> ImagesResponse:
            try:
                return await self._call(request, quality)
            except openai.OpenAIError as err:
                # "from None": the SDK's message can hold part of the API key, and the
                # service may log this failure with its traceback.
                raise self._map_error(err, request.job_id) from None

        response = await self._retry.run(attempt)
        return self._result(response, request.job_id)

    async def moderate(self, text: str) -> bool:
        """Return True when OpenAI's moderation model flags ``text``; a check that cannot run raises RenderFailed."""

        async def attempt() -> bool:
            try:
                response = await self._client.moderations.create(model=MODERATION_MODEL, input=text)
            except openai.OpenAIError as err:
                raise self._map_error(err, 0) from None
            return any(result.flagged for result in response.results)

        return await self._retry.run(attempt)

    async def _call(self, request: RenderRequest, quality: str) -> ImagesResponse:
        """Make the one API call for ``request`` (no retries here)."""
        size = f"{request.width}x{request.height}"
        count = max(1, min(request.count, self._capabilities.max_count))
        # Only jpeg/webp take output_compression; GPT image models reject it otherwise.
        compression: int | Omit = omit
        if self._compression is not None and self._format in COMPRESSIBLE_FORMATS:
            compression = self._compression
        # response_format and style are never sent: GPT image models reject them and
        # always answer with b64_json.
        if request.operation is Operation.VARY:
            assert request.source is not None
            prompt = fold_negative(
                variation_prompt(request.prompt, request.extra_prompt, request.strength), request.negative
            )
            filename, mime = _sniff_mime(request.source)
            log.debug("job %d: OpenAI edit %s x%d with %s", request.job_id, size, count, self._model)
            return await self._client.images.edit(
                model=self._model,
                # A named file with its MIME type: bare bytes go up as
                # application/octet-stream, which the API refuses.
                image=(filename, request.source, mime),
                prompt=prompt[:MAX_PROMPT_CHARS],
                n=count,
                size=size,
                quality=cast(Quality, quality),
                output_format=self._format,
                output_compression=compression,
            )
        prompt = fold_negative(request.prompt, request.negative)
        log.debug("job %d: OpenAI generate %s x%d with %s", request.job_id, size, count, self._model)
        return await self._client.images.generate(
            model=self._model,
            prompt=prompt[:MAX_PROMPT_CHARS],
            n=count,
            size=size,
            quality=cast(Quality, quality),
            output_format=self._format,
            output_compression=compression,
        )

    def _result(self, response: ImagesResponse, job_id: int) -> RenderResult:
        """Decode the response's base64 images into a RenderResult."""
        images: list[bytes] = []
        for item in response.data or []:
            if not item.b64_json:
                continue
            try:
                images.append(base64.b64decode(item.b64_json, validate=True))
            except (binascii.Error, ValueError):
                log.warning("job %d: OpenAI returned an image that is not valid base64", job_id)
        if not images:
            log.warning("job %d: OpenAI response held no b64_json images", job_id)
            raise RenderFailed(MSG_NO_IMAGE)
        usage = None
        if response.usage is not None:
            usage = Usage(
                input_tokens=response.usage.input_tokens,
                output_tokens=response.usage.output_tokens,
                total_tokens=response.usage.total_tokens,
            )
        return RenderResult(images=tuple(images), usage=usage, made_by=f"OpenAI {self._model}")

    def _map_error(self, err: openai.OpenAIError, job_id: int) -> RenderFailed:
        """Translate one SDK error into the Easel family, logging what the operator needs."""
        detail = scrub_secrets(str(err), *self._secrets)
        if isinstance(err, openai.APITimeoutError) and not _refused(err):
            log.warning("job %d: OpenAI request timed out (raise openai.timeout_s if this recurs)", job_id)
            return RenderFailed(MSG_TIMEOUT, retryable=True)
        if isinstance(err, openai.APIConnectionError):
            log.warning("job %d: could not connect to OpenAI: %s", job_id, detail)
            return RenderFailed(MSG_UNREACHABLE, retryable=True)
        if not isinstance(err, openai.APIStatusError):
            log.error("job %d: unexpected OpenAI client error: %s", job_id, detail)
            return RenderFailed(MSG_REJECTED)
        code = _error_code(err)
        status = err.status_code
        if isinstance(err, openai.BadRequestError) and code in _SAFETY_CODES:
            log.info("job %d: OpenAI's safety system declined the request (%s)", job_id, code)
            return ContentRefused(MSG_SAFETY)
        if code in _QUOTA_CODES:
            log.error("the OpenAI account is out of credit; add credit or change openai.api_key (%s)", detail)
            return RenderFailed(MSG_OUT_OF_CREDIT)
        if status == 429:
            after = _retry_after(err.response.headers)
            log.warning("job %d: OpenAI rate limit (retry after %s s): %s", job_id, after, detail)
            return RenderFailed(MSG_BUSY, retryable=True, retry_after=after)
        if status >= 500:
            log.warning("job %d: OpenAI server error %d: %s", job_id, status, detail)
            return RenderFailed(MSG_SERVER, retryable=True)
        if status in (401, 403):
            log.error(
                "OpenAI refused the credentials (HTTP %d: %s); check openai.api_key and that the "
                "account may use openai.model = %r",
                status,
                detail,
                self._model,
            )
            return RenderFailed(MSG_MISCONFIGURED)
        if status == 404:
            if code == "model_not_found":
                log.error(
                    "OpenAI does not know openai.model = %r (retired, misspelt or not available to "
                    "this account): %s; %s",
                    self._model,
                    detail,
                    RETIRED_ADVICE,
                )
            else:
                log.error("OpenAI answered 404 (%s); check openai.base_url", detail)
            return RenderFailed(MSG_MISCONFIGURED)
        if status in (408, 409):
            log.warning("job %d: OpenAI answered %d: %s", job_id, status, detail)
            return RenderFailed(MSG_SERVER, retryable=True)
        log.warning("job %d: OpenAI rejected the request (HTTP %d): %s", job_id, status, detail)
        return RenderFailed(MSG_REJECTED)
