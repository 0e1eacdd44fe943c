"""A local OpenAI-compatible server for tests: the Images and Moderations wire format, faults on demand."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import socket
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web
from PIL import Image, UnidentifiedImageError

STANDARD_SIZES = frozenset({"1024x1024", "1536x1024", "1024x1536"})
BASE_QUALITIES = frozenset({"low", "medium", "high", "auto"})
EXTENDED_QUALITIES = BASE_QUALITIES | {"xhigh", "max"}
FORMATS = frozenset({"png", "jpeg", "webp"})
IMAGE_MIME_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
# Parameters of the retired DALL·E models that GPT image models refuse.
LEGACY_PARAMS = ("response_format", "style")
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# Output tokens per 1024x1024 image, by quality (OpenAI's published GPT image figures).
OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "xhigh": 6240, "max": 8320}


@dataclass(frozen=True)
class FakeModel:
    """What the fake accepts for one model id."""

    qualities: frozenset[str] = BASE_QUALITIES
    flexible_sizes: bool = False
    transparent: bool = True
    edits: bool = True


_FLEX = FakeModel(flexible_sizes=True, transparent=False)
_FLEX_EXT = FakeModel(flexible_sizes=True, qualities=EXTENDED_QUALITIES)
DEFAULT_MODELS: Mapping[str, FakeModel] = {
    "gpt-image-1-mini": FakeModel(),
    "gpt-image-1.5": FakeModel(),
    "gpt-image-2": _FLEX,
    "gpt-image-2-2026-04-21": _FLEX,
    "gpt-image-2.5-flare": _FLEX_EXT,
    "gpt-image-2.5-flare-2026-09-08": _FLEX_EXT,
    "gpt-image-2.5-sunburst": _FLEX_EXT,
    "gpt-image-2.5-sunburst-2026-09-08": _FLEX_EXT,
    "gpt-image-2.6-flare": FakeModel(qualities=EXTENDED_QUALITIES),
    "gpt-image-2.6-sunburst": FakeModel(qualities=EXTENDED_QUALITIES),
    "chatgpt-image-latest": FakeModel(transparent=False),
}


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Return an OpenAI-style error body."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid_api_key_body(key: str = "sk-test-abcdefghijklmnop1234") -> dict[str, Any]:
    """Return the 401 body OpenAI sends for a wrong key, which echoes part of that key."""
    masked = key[:7] + "*" * max(len(key) - 11, 3) + key[-4:]
    return error_body(
        f"Incorrect API key provided: {masked}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def moderation_blocked_body() -> dict[str, Any]:
    """Return the 400 body of a prompt refused by OpenAI's image safety system."""
    return error_body(
        "Your request was rejected as a result of our safety system. Your request may contain content "
        "that is not allowed by our safety system.",
        type="image_generation_user_error",
        code="moderation_blocked",
    )


def insufficient_quota_body() -> dict[str, Any]:
    """Return the 429 body of an account that is out of credit."""
    return error_body(
        "You exceeded your current quota, please check your plan and billing details.",
        type="insufficient_quota",
        code="insufficient_quota",
    )


def rate_limit_body() -> dict[str, Any]:
    """Return the 429 body of an ordinary rate limit."""
    return error_body(
        "Rate limit reached for gpt-image-1-mini on images per minute (IPM): Limit 5, Used 5, Requested 1.",
        type="requests",
        code="rate_limit_exceeded",
    )


def colour_for(prompt: str) -> tuple[int, int, int]:
    """Return the fill colour the fake uses for images made from ``prompt``."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return digest[0], digest[1], digest[2]


@dataclass(frozen=True)
class UploadedFile:
    """One file part of a multipart request."""

    field: str
    filename: str | None
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One request as the fake saw it (the Authorization header is left out)."""

    method: str
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)

    @property
    def fields(self) -> dict[str, Any]:
        """The request's parameters, from its JSON body or its text form fields."""
        return dict(self.json) if self.json is not None else dict(self.form)


@dataclass
class _Fault:
    status: int
    body: Any
    headers: dict[str, str]
    times: int


class _Reject(Exception):
    """Abort handling with an OpenAI-style error response."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class FakeOpenAI:
    """An aiohttp server on 127.0.0.1 speaking enough of the OpenAI API for Easel's tests."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: Mapping[str, FakeModel] | None = None,
        flag_words: Iterable[str] = ("forbidden",),
        flag_category: str = "violence",
        refuse_words: Iterable[str] = (),
    ) -> None:
        self.api_key = api_key
        self.models: dict[str, FakeModel] = dict(DEFAULT_MODELS if models is None else models)
        self.flag_words = tuple(w.lower() for w in flag_words)
        self.flag_category = flag_category
        self.refuse_words = tuple(w.lower() for w in refuse_words)
        self.delay = 0.0
        self.noisy = False
        self.requests: list[RecordedRequest] = []
        self._faults: deque[_Fault] = deque()
        self._image_cache: dict[tuple[int, int, tuple[int, int, int], int, str], bytes] = {}
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        """The URL to give an OpenAI client, ``http://127.0.0.1:PORT/v1``."""
        if not self._port:
            raise RuntimeError("FakeOpenAI is not started")
        return f"http://127.0.0.1:{self._port}/v1"

    def fail_next(
        self,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``body``/``headers``) instead."""
        if body is None:
            body = error_body(
                f"Injected failure ({status})", type="server_error" if status >= 500 else "error"
            )
        self._faults.append(_Fault(status, body, dict(headers or {}), times))

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Return the recorded requests whose path ends with ``path``."""
        return [r for r in self.requests if r.path.endswith(path)]

    async def start(self) -> None:
        """Start listening on a free port."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/images/generations", self._generations)
        app.router.add_post("/v1/images/edits", self._edits)
        app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        # handler_cancellation: a handler sleeping in ``delay`` stops when the client gives up,
        # so closing the server never waits for it.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.bind(("127.0.0.1", 0))
            self._port = self._sock.getsockname()[1]
            await web.SockSite(self._runner, self._sock).start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the server."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing -------------------------------------------------------------------------

    def _record(self, request: web.Request) -> RecordedRequest:
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"}
        recorded = RecordedRequest(method=request.method, path=request.path, headers=headers)
        self.requests.append(recorded)
        return recorded

    async def _prelude(self, request: web.Request, recorded: RecordedRequest) -> web.Response | None:
        """Apply delay, injected faults and the key check; return a response to send instead."""
        if self.delay:
            await asyncio.sleep(self.delay)
        if self._faults:
            fault = self._faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self._faults.popleft()
            if isinstance(fault.body, (dict, list)):
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
            return web.Response(text=str(fault.body), status=fault.status, headers=fault.headers)
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not key or (self.api_key is not None and key != self.api_key):
            body = (
                invalid_api_key_body(key)
                if key
                else error_body(
                    "You didn't provide an API key. You need to provide your API key in an Authorization "
                    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                )
            )
            return web.json_response(body, status=401)
        return None

    @staticmethod
    def _reject(exc: _Reject) -> web.Response:
        return web.json_response(exc.body, status=exc.status)

    async def _not_found(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response(error_body(f"Invalid URL ({request.method} {request.path})"), status=404)

    # -- validation -----------------------------------------------------------------------

    def _model(self, params: Mapping[str, Any]) -> tuple[str, FakeModel]:
        model = params.get("model")
        if not model:
            raise _Reject(400, error_body("You must provide a model parameter.", param="model"))
        spec = self.models.get(str(model))
        if spec is None:
            raise _Reject(
                404,
                error_body(
                    f"The model `{model}` does not exist or you do not have access to it.",
                    code="model_not_found",
                ),
            )
        return str(model), spec

    def _check_common(self, params: Mapping[str, Any], spec: FakeModel) -> tuple[int, int, int, str, str]:
        for name in LEGACY_PARAMS:
            if name in params:
                raise _Reject(400, error_body(f"Unknown parameter: '{name}'.", param=name))
        prompt = params.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _Reject(400, error_body("Missing required parameter: 'prompt'.", param="prompt"))
        if len(prompt) > 32000:
            raise _Reject(400, error_body("Prompt is too long (maximum 32000 characters).", param="prompt"))
        try:
            n = int(params.get("n", 1))
        except (TypeError, ValueError):
            raise _Reject(400, error_body("Invalid type for 'n': expected an integer.", param="n")) from None
        if not 1 <= n <= 10:
            raise _Reject(400, error_body(f"Invalid 'n': {n} is not between 1 and 10.", param="n"))
        width, height = self._size(str(params.get("size", "auto")), spec)
        quality = str(params.get("quality", "auto"))
        if quality not in spec.qualities:
            raise _Reject(
                400,
                error_body(
                    f"Invalid value: '{quality}'. Supported values are: "
                    + ", ".join(f"'{q}'" for q in sorted(spec.qualities))
                    + ".",
                    param="quality",
                    code="invalid_value",
                ),
            )
        output_format = str(params.get("output_format", "png"))
        if output_format not in FORMATS:
            raise _Reject(
                400,
                error_body(f"Invalid value: '{output_format}'.", param="output_format", code="invalid_value"),
            )
        if "output_compression" in params:
            try:
                compression = int(params["output_compression"])
            except (TypeError, ValueError):
                compression = -1
            if not 0 <= compression <= 100:
                raise _Reject(
                    400, error_body("output_compression must be 0 to 100.", param="output_compression")
                )
            if output_format == "png" and compression != 100:
                raise _Reject(
                    400,
                    error_body(
                        "Compression less than 100 is only supported for JPEG and WebP output formats.",
                        param="output_compression",
                    ),
                )
        background = str(params.get("background", "auto"))
        if background not in ("auto", "opaque", "transparent"):
            raise _Reject(400, error_body(f"Invalid value: '{background}'.", param="background"))
        if background == "transparent" and not spec.transparent:
            raise _Reject(
                400, error_body("Transparent background is not supported for this model.", param="background")
            )
        lowered = prompt.lower()
        if any(word in lowered for word in self.refuse_words):
            raise _Reject(400, moderation_blocked_body())
        return width, height, n, quality, output_format

    @staticmethod
    def _size(size: str, spec: FakeModel) -> tuple[int, int]:
        if size == "auto":
            return 1024, 1024
        if size in STANDARD_SIZES:
            std_w, std_h = size.split("x")
            return int(std_w), int(std_h)
        bad = _Reject(
            400,
            error_body(
                f"Invalid value: '{size}'. Supported values are: '1024x1024', '1024x1536', '1536x1024', "
                "and 'auto'.",
                param="size",
                code="invalid_value",
            ),
        )
        if not spec.flexible_sizes:
            raise bad
        try:
            w_s, h_s = size.split("x")
            w, h = int(w_s), int(h_s)
        except ValueError:
            raise bad from None
        if (
            w <= 0
            or h <= 0
            or w % 16
            or h % 16
            or max(w, h) > 3840
            or max(w / h, h / w) > 3
            or w * h > 3840 * 2160
        ):
            raise bad
        return w, h

    # -- images ---------------------------------------------------------------------------

    def _png(self, width: int, height: int, colour: tuple[int, int, int], index: int, fmt: str) -> bytes:
        key = (width, height, colour, index, fmt)
        cached = self._image_cache.get(key)
        if cached is None:
            image = Image.new("RGB", (width, height), colour)
            if self.noisy:
                # Photographic detail compresses badly, like real renders: size tests need it.
                noise = Image.effect_noise((width, height), 64).convert("RGB")
                image = Image.blend(image, noise, 0.5)
            # A small mark in the corner tells the images of one batch apart; the fill
            # colour (pixel 0,0) still identifies the prompt.
            if index:
                mark = tuple(255 - c for c in colour)
                image.paste(mark, (width - 16 * (index + 1), height - 16, width - 16 * index, height))
            buffer = io.BytesIO()
            image.save(buffer, format={"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt])
            cached = buffer.getvalue()
            self._image_cache[key] = cached
        return cached

    def _images_response(
        self,
        params: Mapping[str, Any],
        size: tuple[int, int, int, str, str],
        input_image_tokens: int,
    ) -> web.Response:
        width, height, n, quality, output_format = size
        prompt = str(params["prompt"])
        colour = colour_for(prompt)
        data = [
            {"b64_json": base64.b64encode(self._png(width, height, colour, i, output_format)).decode()}
            for i in range(n)
        ]
        effective_quality = "medium" if quality == "auto" else quality
        per_image = max(1, OUTPUT_TOKENS[effective_quality] * width * height // (1024 * 1024))
        text_tokens = max(1, len(prompt.split()))
        input_tokens = text_tokens + input_image_tokens
        output_tokens = per_image * n
        background = str(params.get("background", "auto"))
        return web.json_response(
            {
                "created": int(time.time()),
                "data": data,
                "background": "opaque" if background == "auto" else background,
                "output_format": output_format,
                "quality": effective_quality,
                "size": f"{width}x{height}",
                "usage": {
                    "input_tokens": input_tokens,
                    "input_tokens_details": {"image_tokens": input_image_tokens, "text_tokens": text_tokens},
                    "output_tokens": output_tokens,
                    "output_tokens_details": {"image_tokens": output_tokens, "text_tokens": 0},
                    "total_tokens": input_tokens + output_tokens,
                },
            }
        )

    async def _read_json(self, request: web.Request) -> tuple[RecordedRequest, web.Response | None]:
        """Record a JSON request and run the checks every endpoint shares; a response means stop."""
        recorded = self._record(request)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        recorded.json = body if isinstance(body, dict) else None
        return recorded, await self._prelude(request, recorded)

    async def _generations(self, request: web.Request) -> web.Response:
        recorded, early = await self._read_json(request)
        if early is not None:
            return early
        if recorded.json is None:
            return web.json_response(
                error_body("We could not parse the JSON body of your request."), status=400
            )
        try:
            _, spec = self._model(recorded.json)
            checked = self._check_common(recorded.json, spec)
        except _Reject as exc:
            return self._reject(exc)
        return self._images_response(recorded.json, checked, 0)

    async def _edits(self, request: web.Request) -> web.Response:
        recorded = self._record(request)
        if not request.content_type.startswith("multipart/"):
            early = await self._prelude(request, recorded)
            if early is not None:
                return early
            return web.json_response(
                error_body("Invalid Content-Type header; expected multipart/form-data."), status=400
            )
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue
            name = part.name or ""
            payload = await part.read(decode=True)
            if part.filename is not None:
                recorded.files.append(
                    UploadedFile(
                        field=name,
                        filename=part.filename,
                        content_type=part.headers.get("Content-Type", "application/octet-stream"),
                        data=bytes(payload),
                    )
                )
            else:
                recorded.form[name] = bytes(payload).decode()
        early = await self._prelude(request, recorded)
        if early is not None:
            return early
        try:
            _, spec = self._model(recorded.form)
            if not spec.edits:
                raise _Reject(400, error_body("This model does not support image edits.", param="model"))
            images = [f for f in recorded.files if f.field in ("image", "image[]")]
            if not images:
                raise _Reject(400, error_body("Missing required parameter: 'image'.", param="image"))
            if len(images) > 16:
                raise _Reject(400, error_body("Too many images: at most 16 are allowed.", param="image"))
            for upload in images:
                if upload.content_type not in IMAGE_MIME_TYPES:
                    raise _Reject(
                        400,
                        error_body(
                            f"Invalid file 'image': unsupported mimetype ('{upload.content_type}'). "
                            "Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'.",
                            param="image",
                            code="unsupported_file_mimetype",
                        ),
                    )
                try:
                    with Image.open(io.BytesIO(upload.data)) as img:
                        img.verify()
                except (UnidentifiedImageError, OSError, SyntaxError):
                    raise _Reject(
                        400,
                        error_body(
                            "Invalid image file or mode for image 1, please check your image file.",
                            param="image",
                            code="invalid_image_file",
                        ),
                    ) from None
            checked = self._check_common(recorded.form, spec)
        except _Reject as exc:
            return self._reject(exc)
        # Roughly what OpenAI bills for one 1024x1024 input image.
        return self._images_response(recorded.form, checked, 388 * len(images))

    # -- moderations ----------------------------------------------------------------------

    async def _moderations(self, request: web.Request) -> web.Response:
        recorded, early = await self._read_json(request)
        if early is not None:
            return early
        if recorded.json is None or "input" not in recorded.json:
            return web.json_response(
                error_body("Missing required parameter: 'input'.", param="input"), status=400
            )
        raw = recorded.json["input"]
        texts: list[str]
        if isinstance(raw, str):
            texts = [raw]
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            texts = list(raw)
        elif isinstance(raw, list):
            # Multi-modal input: one result for the whole list, judged on its text parts.
            texts = [" ".join(str(x.get("text", "")) for x in raw if isinstance(x, dict))]
        else:
            return web.json_response(error_body("Invalid type for 'input'.", param="input"), status=400)
        results = []
        for text in texts:
            flagged = any(word in text.lower() for word in self.flag_words)
            categories = {c: flagged and c == self.flag_category for c in MODERATION_CATEGORIES}
            scores = {c: (0.97 if categories[c] else 0.0001) for c in MODERATION_CATEGORIES}
            results.append(
                {
                    "flagged": flagged,
                    "categories": categories,
                    "category_scores": scores,
                    "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
                }
            )
        model = str(recorded.json.get("model") or "omni-moderation-latest")
        return web.json_response({"id": f"modr-{len(self.requests)}", "model": model, "results": results})
