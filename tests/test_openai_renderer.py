"""The OpenAI renderer, through the real AsyncOpenAI client, against FakeOpenAI."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
from collections.abc import AsyncIterator

import openai
import pytest
from openai import AsyncOpenAI
from PIL import Image

from bot.errors import ConfigError, ContentRefused, RenderFailed
from bot.renderers.base import Operation, RenderRequest
from bot.renderers.openai import (
    DEFAULT_MODEL,
    MODELS,
    STANDARD_SIZES,
    OpenAIRenderer,
    SettingsCheck,
    build_client,
    check_model,
    scrub_secrets,
    validate_settings,
    variation_prompt,
)
from bot.retry import RetryPolicy
from tests.fakeopenai import (
    FakeOpenAI,
    colour_for,
    error_body,
    insufficient_quota_body,
    moderation_blocked_body,
    rate_limit_body,
)

KEY = "sk-test-abcdefghijklmnop1234"
FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)
# The 401 body from the brief: OpenAI echoes a masked part of the key.
INVALID_KEY_BODY = {
    "error": {
        "message": "Incorrect API key provided: sk-test***************1234. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    c = build_client(KEY, fake.base_url, timeout_s=5)
    yield c
    await c.close()


def png(width: int = 64, height: int = 64, colour: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def generate(prompt: str = "a lighthouse at dusk", **kw: object) -> RenderRequest:
    fields: dict[str, object] = {"width": 1024, "height": 1024, "count": 1}
    fields.update(kw)
    return RenderRequest(job_id=7, operation=Operation.GENERATE, prompt=prompt, **fields)  # type: ignore[arg-type]


def vary(prompt: str = "a lighthouse at dusk", source: bytes | None = None, **kw: object) -> RenderRequest:
    fields: dict[str, object] = {"width": 1024, "height": 1024, "count": 1, "source": source or png()}
    fields.update(kw)
    return RenderRequest(job_id=8, operation=Operation.VARY, prompt=prompt, **fields)  # type: ignore[arg-type]


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def bot_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("bot"))


# -- generate -------------------------------------------------------------------------------


async def test_generate_returns_pngs_of_the_requested_size(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    renderer = OpenAIRenderer(client, "gpt-image-1-mini", quality="low", retry=FAST)
    result = await renderer.render(generate(width=1536, height=1024, count=3))

    assert len(result.images) == 3
    for data in result.images:
        image = decoded(data)
        assert image.format == "PNG"
        assert image.size == (1536, 1024)
        assert image.getpixel((0, 0)) == colour_for("a lighthouse at dusk")
    assert len(set(result.images)) == 3
    assert result.made_by == "OpenAI gpt-image-1-mini"

    [sent] = fake.requests_to("/images/generations")
    assert sent.json == {
        "model": "gpt-image-1-mini",
        "prompt": "a lighthouse at dusk",
        "n": 3,
        "size": "1536x1024",
        "quality": "low",
        "output_format": "png",
    }
    assert "response_format" not in sent.fields
    assert "style" not in sent.fields
    assert "authorization" not in sent.headers


async def test_usage_is_reported(client: AsyncOpenAI) -> None:
    result = await OpenAIRenderer(client, retry=FAST).render(generate(count=2))
    assert result.usage is not None
    assert result.usage.output_tokens > 0
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens


async def test_member_quality_overrides_the_default(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    await OpenAIRenderer(client, quality="auto", retry=FAST).render(generate(quality="high"))
    assert fake.requests[-1].fields["quality"] == "high"


async def test_unavailable_quality_is_refused_before_any_request(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    with pytest.raises(RenderFailed, match="low, medium, high, auto"):
        await OpenAIRenderer(client, retry=FAST).render(generate(quality="max"))
    assert fake.requests == []


async def test_negative_prompt_is_folded_into_the_prompt(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    await OpenAIRenderer(client, retry=FAST).render(generate("a cat", negative="dogs, text"))
    assert fake.requests[-1].fields["prompt"] == "a cat\nAvoid: dogs, text"


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
async def test_compressed_formats_send_output_compression(
    fake: FakeOpenAI, client: AsyncOpenAI, fmt: str
) -> None:
    renderer = OpenAIRenderer(client, output_format=fmt, output_compression=80, retry=FAST)
    result = await renderer.render(generate())
    assert decoded(result.images[0]).format == fmt.upper()
    sent = fake.requests[-1].fields
    assert sent["output_format"] == fmt
    assert sent["output_compression"] == 80


async def test_png_never_sends_output_compression(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    await OpenAIRenderer(client, output_format="png", retry=FAST).render(generate())
    assert "output_compression" not in fake.requests[-1].fields


async def test_flexible_size_model_renders_a_wide_size(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    renderer = OpenAIRenderer(client, "gpt-image-2", retry=FAST)
    assert (2048, 1152) in renderer.capabilities.sizes
    result = await renderer.render(generate(width=2048, height=1152))
    assert decoded(result.images[0]).size == (2048, 1152)


# -- vary -----------------------------------------------------------------------------------


async def test_vary_uploads_a_named_png_with_the_variation_prompt(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    source = png(96, 64)
    renderer = OpenAIRenderer(client, quality="medium", retry=FAST)
    result = await renderer.render(vary("a red fox", source=source, count=2, width=1024, height=1536))

    assert len(result.images) == 2
    assert all(decoded(d).size == (1024, 1536) for d in result.images)
    [sent] = fake.requests_to("/images/edits")
    [upload] = sent.files
    assert upload.field == "image"
    assert upload.filename == "source.png"
    assert upload.content_type == "image/png"
    assert upload.data == source
    assert sent.form["prompt"] == variation_prompt("a red fox", "")
    assert "a red fox" in sent.form["prompt"]
    assert sent.form["model"] == DEFAULT_MODEL
    assert sent.form["n"] == "2"
    assert sent.form["size"] == "1024x1536"
    assert sent.form["quality"] == "medium"
    assert "response_format" not in sent.form
    assert "style" not in sent.form
    assert result.usage is not None
    assert result.usage.input_tokens > 0


async def test_vary_names_a_jpeg_source_as_jpeg(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buffer, format="JPEG")
    await OpenAIRenderer(client, retry=FAST).render(vary(source=buffer.getvalue()))
    [upload] = fake.requests[-1].files
    assert (upload.filename, upload.content_type) == ("source.jpg", "image/jpeg")


async def test_vary_without_a_source_fails_without_a_request(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    request = RenderRequest(job_id=1, operation=Operation.VARY, prompt="x", width=1024, height=1024)
    with pytest.raises(RenderFailed):
        await OpenAIRenderer(client, retry=FAST).render(request)
    assert fake.requests == []


def test_variation_prompt_combines_original_and_extra() -> None:
    text = variation_prompt("  a red fox ", " in snow ")
    assert "a red fox" in text
    assert "in snow" in text
    assert "variation" in text.lower()
    assert "In this variation" not in variation_prompt("a red fox", "   ")


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["moderation_blocked", "content_policy_violation"])
async def test_safety_refusal_maps_to_content_refused(
    fake: FakeOpenAI, client: AsyncOpenAI, code: str
) -> None:
    body = moderation_blocked_body()
    body["error"]["code"] = code
    fake.fail_next(400, body)
    with pytest.raises(ContentRefused) as caught:
        await OpenAIRenderer(client, retry=FAST).render(generate())
    message = str(caught.value)
    assert message == "OpenAI's safety system declined this prompt. Try rewording it."
    assert code not in message
    assert "400" not in message
    assert caught.value.retryable is False
    assert len(fake.requests) == 1


async def test_safety_refusal_from_the_prompt_itself() -> None:
    async with FakeOpenAI(refuse_words=["gore"]) as server:
        c = build_client(KEY, server.base_url, timeout_s=5)
        try:
            with pytest.raises(ContentRefused):
                await OpenAIRenderer(c, retry=FAST).render(generate("lots of gore"))
        finally:
            await c.close()


@pytest.mark.parametrize(
    "headers", [{"retry-after": "0"}, {"retry-after-ms": "0"}], ids=["retry-after", "retry-after-ms"]
)
async def test_rate_limit_is_retried_once_honouring_retry_after(
    fake: FakeOpenAI, client: AsyncOpenAI, headers: dict[str, str]
) -> None:
    fake.fail_next(429, rate_limit_body(), headers=headers)
    # A backoff of 30-60 s would blow the 5 s budget: only retry-after: 0 lets this finish.
    slow = RetryPolicy(attempts=3, base_delay=30, max_delay=60)
    result = await asyncio.wait_for(OpenAIRenderer(client, retry=slow).render(generate()), timeout=5)
    assert len(result.images) == 1
    assert len(fake.requests) == 2


async def test_server_errors_exhaust_exactly_the_attempts(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.fail_next(500, times=10)
    with pytest.raises(RenderFailed) as caught:
        await OpenAIRenderer(client, retry=FAST).render(generate())
    assert caught.value.retryable is True
    # Exactly our three attempts reached the server: the SDK's own retries are off.
    assert len(fake.requests) == FAST.attempts


async def test_build_client_disables_sdk_retries() -> None:
    c = build_client(KEY, "http://127.0.0.1:9/v1", timeout_s=3)
    try:
        assert c.max_retries == 0
    finally:
        await c.close()


async def test_out_of_credit_is_not_retried_and_tells_the_operator(
    fake: FakeOpenAI, client: AsyncOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    fake.fail_next(429, insufficient_quota_body(), headers={"retry-after": "0"}, times=5)
    with pytest.raises(RenderFailed) as caught:
        await OpenAIRenderer(client, retry=FAST).render(generate())
    assert caught.value.retryable is False
    assert "budget" in str(caught.value)
    assert "quota" not in str(caught.value)
    assert len(fake.requests) == 1
    errors = [r for r in caplog.records if r.name.startswith("bot") and r.levelno == logging.ERROR]
    assert any("out of credit" in r.getMessage() and "openai.api_key" in r.getMessage() for r in errors)


async def test_bad_key_gives_a_generic_message_and_a_scrubbed_log(
    fake: FakeOpenAI, client: AsyncOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    fake.fail_next(401, INVALID_KEY_BODY)
    with pytest.raises(RenderFailed) as caught:
        await OpenAIRenderer(client, retry=FAST).render(generate())
    assert str(caught.value) == "The image service is misconfigured; the operator has been told."
    assert caught.value.retryable is False
    assert caught.value.__suppress_context__
    assert len(fake.requests) == 1
    text = bot_log(caplog)
    assert "openai.api_key" in text
    for fragment in (KEY, "sk-", "***", "1234", KEY[-8:]):
        assert fragment not in text


async def test_wrong_key_against_the_server_is_scrubbed(
    fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    wrong = "sk-proj-wrongwrongwrong9876"
    c = build_client(wrong, fake.base_url, timeout_s=5)
    try:
        with pytest.raises(RenderFailed, match="misconfigured"):
            await OpenAIRenderer(c, retry=FAST).render(generate())
    finally:
        await c.close()
    text = bot_log(caplog)
    assert "HTTP 401" in text
    for fragment in (wrong, "sk-proj", "9876"):
        assert fragment not in text


async def test_permission_denied_is_generic(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.fail_next(403, error_body("Your organization must be verified to use the model `gpt-image-1-mini`."))
    with pytest.raises(RenderFailed, match="misconfigured") as caught:
        await OpenAIRenderer(client, retry=FAST).render(generate())
    assert caught.value.retryable is False


async def test_unknown_model_on_the_server_names_the_setting(
    fake: FakeOpenAI, client: AsyncOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    with pytest.raises(RenderFailed, match="misconfigured") as caught:
        await OpenAIRenderer(client, "gpt-image-0", retry=FAST).render(generate())
    assert caught.value.retryable is False
    assert len(fake.requests) == 1
    assert "openai.model = 'gpt-image-0'" in bot_log(caplog)


async def test_other_bad_request_is_short_and_not_retried(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.fail_next(400, error_body("Invalid value: '999x1'.", param="size", code="invalid_value"))
    with pytest.raises(RenderFailed) as caught:
        await OpenAIRenderer(client, retry=FAST).render(generate())
    assert not isinstance(caught.value, ContentRefused)
    assert caught.value.retryable is False
    assert "999x1" not in str(caught.value)
    assert len(fake.requests) == 1


async def test_slow_backend_times_out_as_a_retryable_failure(fake: FakeOpenAI) -> None:
    fake.delay = 1.0
    c = build_client(KEY, fake.base_url, timeout_s=0.2)
    try:
        with pytest.raises(RenderFailed, match="too long") as caught:
            await OpenAIRenderer(c, retry=RetryPolicy(attempts=2, base_delay=0, max_delay=0)).render(
                generate()
            )
    finally:
        await c.close()
    assert caught.value.retryable is True
    assert len(fake.requests) == 2


async def test_unreachable_backend_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    c = build_client(KEY, f"http://127.0.0.1:{port}/v1", timeout_s=2)
    try:
        with pytest.raises(RenderFailed, match="could not be reached") as caught:
            await OpenAIRenderer(c, retry=RetryPolicy(attempts=1)).render(generate())
    finally:
        await c.close()
    assert caught.value.retryable is True


# -- settings and capabilities ---------------------------------------------------------------


@pytest.mark.parametrize("model", ["dall-e-2", "dall-e-3", "gpt-image-1"])
def test_retired_models_are_refused(model: str) -> None:
    check = validate_settings(model)
    assert not check.ok
    [problem] = check.errors
    assert problem.startswith(f"openai.model = {model!r} is retired")
    assert "gpt-image-1-mini (cheap) or gpt-image-1.5" in problem
    assert check_model(model) == [problem]


def test_bad_quality_names_the_accepted_ones() -> None:
    assert check_model("gpt-image-1-mini", quality="hd") == [
        "openai.quality = 'hd' is not accepted by gpt-image-1-mini; use one of low, medium, high, auto"
    ]
    assert check_model("gpt-image-2.5-sunburst", quality="max") == []


def test_unknown_model_is_allowed_with_a_warning() -> None:
    check = validate_settings("flux-schnell")
    assert check.ok
    [warning] = check.warnings
    assert "'flux-schnell'" in warning
    assert "1024x1024" in warning


def test_compression_only_for_jpeg_or_webp() -> None:
    assert check_model(DEFAULT_MODEL, output_format="webp", output_compression=70) == []
    [problem] = check_model(DEFAULT_MODEL, output_format="png", output_compression=70)
    assert "openai.output_compression" in problem
    [problem] = check_model(DEFAULT_MODEL, output_format="jpeg", output_compression=170)
    assert "0 to 100" in problem


def test_known_models_pass_with_defaults() -> None:
    for model in MODELS:
        assert validate_settings(model) == SettingsCheck(), model


async def test_constructor_refuses_invalid_settings(client: AsyncOpenAI) -> None:
    with pytest.raises(ConfigError, match="retired"):
        OpenAIRenderer(client, "dall-e-3")


async def test_capabilities_follow_the_model_table(client: AsyncOpenAI) -> None:
    caps = OpenAIRenderer(client, "gpt-image-1-mini").capabilities
    assert caps.sizes == STANDARD_SIZES
    assert caps.seeded is False
    assert caps.negative_prompt is False
    assert caps.max_count == 4
    assert caps.variation is True
    assert caps.operations == (Operation.GENERATE, Operation.VARY)
    assert caps.qualities == ("low", "medium", "high", "auto")
    assert OpenAIRenderer(client, "some-compatible-model").capabilities.sizes == STANDARD_SIZES
    assert len(OpenAIRenderer(client, "gpt-image-2").capabilities.sizes) > len(STANDARD_SIZES)


def test_scrub_secrets_removes_keys() -> None:
    text = "Incorrect API key provided: sk-abc***xyz. Also sk-proj-AbC_123 and mysecretkey."
    scrubbed = scrub_secrets(text, "mysecretkey")
    for fragment in ("sk-abc", "xyz", "sk-proj", "AbC_123", "mysecretkey", "***"):
        assert fragment not in scrubbed
    assert scrub_secrets("task-queue is fine") == "task-queue is fine"


# -- the fake itself (it must refuse what the real API refuses) ---------------------------------


async def test_fake_rejects_legacy_parameters(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(model=DEFAULT_MODEL, prompt="x", response_format="b64_json")
    assert caught.value.param == "response_format"
    with pytest.raises(openai.BadRequestError):
        await client.images.generate(model=DEFAULT_MODEL, prompt="x", style="vivid")


async def test_fake_rejects_retired_models_and_bad_sizes(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.images.generate(model="dall-e-3", prompt="x")
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        await client.images.generate(model=DEFAULT_MODEL, prompt="x", size="1792x1024")


async def test_fake_rejects_bare_bytes_uploads(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="mimetype"):
        await client.images.edit(model=DEFAULT_MODEL, image=png(), prompt="x")


async def test_fake_moderations_flag_the_configured_word(client: AsyncOpenAI) -> None:
    response = await client.moderations.create(input=["a forbidden thing", "a kitten"])
    flagged, clean = response.results
    assert flagged.flagged is True
    assert flagged.categories.violence is True
    assert clean.flagged is False


async def test_the_moderation_check_flags_what_the_moderation_endpoint_flags(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    renderer = OpenAIRenderer(client, retry=FAST)
    assert await renderer.moderate("something forbidden") is True
    assert await renderer.moderate("a lighthouse at dusk") is False
    sent = fake.requests_to("/moderations")
    assert [r.json["model"] for r in sent] == ["omni-moderation-latest"] * 2  # type: ignore[index]
    fake.fail_next(503, times=5)
    with pytest.raises(RenderFailed):  # a check that cannot run refuses, it does not wave through
        await renderer.moderate("a lighthouse at dusk")
