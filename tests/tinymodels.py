"""Tiny, randomly initialised diffusers models, built offline for tests and benchmarks.

Each builder seeds torch, builds a model of a few hundred kilobytes to a few megabytes and saves it with
``save_pretrained`` into the directory it is given, laid out like the real checkpoint on the Hub, so the code
under test loads it with the usual ``from_pretrained(..., local_files_only=True)`` calls. Nothing is
downloaded. The weights are random, so the images are noise, but sizes, dtypes and control flow are real.
Building the same model twice gives byte-identical files.

- :func:`build_text2image`: a ``StableDiffusionPipeline`` that renders 64x64 (any multiple of 8).
- :func:`build_latent_upscaler`: a ``StableDiffusionLatentUpscalePipeline`` (the SD x2 latent upscaler).
- :func:`build_x4_upscaler`: a ``StableDiffusionUpscalePipeline`` (the SD x4 upscaler).
- :func:`build_safety_checker`: a ``StableDiffusionSafetyChecker`` and its CLIP image processor, laid out like
  ``CompVis/stable-diffusion-safety-checker``, that flags every image or none.
- :func:`build_single_file`: :func:`build_text2image`'s weights as one ``.safetensors`` file in the original
  CompVis/LDM key layout (what model sites sell), next to the diffusers folder that serves as its ``config=``.

The builders silence diffusers' and transformers' logging and progress bars while they run, and restore them
afterwards; they touch no warnings filters and no environment variables.
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, ParamSpec

import diffusers
import torch
import transformers
from diffusers.pipelines.stable_diffusion import safety_checker as sd_safety_checker
from diffusers.utils import logging as diffusers_logging_module
from safetensors.torch import load_file, save_file
from transformers.utils import logging as transformers_logging_module

# diffusers' constructors are untyped and mypy cannot see the torch.nn.Module methods of its models, so the
# libraries are used through ``Any`` aliases rather than sprinkling ``type: ignore`` over every call.
_diffusers: Any = diffusers
_transformers: Any = transformers
_sd_safety_checker: Any = sd_safety_checker
_diffusers_logging: Any = diffusers_logging_module
_transformers_logging: Any = transformers_logging_module

__all__ = [
    "SEED",
    "TEXT_HIDDEN_SIZE",
    "build_latent_upscaler",
    "build_safety_checker",
    "build_single_file",
    "build_text2image",
    "build_x4_upscaler",
]

SEED = 0
"""Every builder seeds torch with this before creating a model, so the weights are reproducible."""

TEXT_HIDDEN_SIZE = 16
"""Width of the tiny CLIP text encoder, and so the UNets' ``cross_attention_dim``."""

# Stable Diffusion's noise schedule. steps_offset=1 and clip_sample=False keep StableDiffusionPipeline from
# warning (FutureWarning) about an outdated scheduler config.
_SD_SCHEDULE: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
}
_MODEL_MAX_LENGTH = 77
# The x4 upscaler's VAE latents are scaled by this; the pipeline warns (a FutureWarning) if it differs.
_X4_VAE_SCALING_FACTOR = 0.08333


_P = ParamSpec("_P")


def _quiet(build: Callable[_P, Path]) -> Callable[_P, Path]:
    """Run a builder with diffusers' and transformers' logging and progress bars silenced, then restore them.

    Only log levels and the tqdm switch change, and only while the builder runs; warnings filters are untouched.
    """

    @functools.wraps(build)
    def quietly(*args: _P.args, **kwargs: _P.kwargs) -> Path:
        diffusers_level = _diffusers_logging.get_verbosity()
        transformers_level = _transformers_logging.get_verbosity()
        bars = _transformers_logging.is_progress_bar_enabled()
        _diffusers_logging.set_verbosity_error()
        _transformers_logging.set_verbosity_error()
        _transformers_logging.disable_progress_bar()
        try:
            return build(*args, **kwargs)
        finally:
            _diffusers_logging.set_verbosity(diffusers_level)
            _transformers_logging.set_verbosity(transformers_level)
            if bars:
                _transformers_logging.enable_progress_bar()

    return quietly


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte-to-unicode table, which CLIP's BPE vocabulary is written in."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(code) for code in codes], strict=True))


def _tiny_tokenizer() -> Any:
    """A CLIP tokenizer with a byte-level vocabulary (no merges), small enough for ``vocab_size=1000``.

    transformers 5 ignores ``CLIPTokenizer(vocab_file=..., merges_file=...)``, so the files are written to a
    temporary directory and loaded with ``from_pretrained``; ``save_pretrained`` later copies them into the
    pipeline's ``tokenizer/`` folder.
    """
    vocab: dict[str, int] = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    chars = list(_bytes_to_unicode().values())
    for token in chars + [char + "</w>" for char in chars]:
        vocab.setdefault(token, len(vocab))
    with tempfile.TemporaryDirectory(prefix="easel-tinytok-") as tmp:
        Path(tmp, "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        Path(tmp, "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        return _transformers.CLIPTokenizer.from_pretrained(tmp, model_max_length=_MODEL_MAX_LENGTH)


def _tiny_text_encoder(*, hidden_act: str = "quick_gelu") -> Any:
    """A one-layer CLIP text encoder of width :data:`TEXT_HIDDEN_SIZE` (the caller seeds torch)."""
    config = _transformers.CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=1,
        vocab_size=1000,
        projection_dim=TEXT_HIDDEN_SIZE,
        max_position_embeddings=_MODEL_MAX_LENGTH,
        hidden_act=hidden_act,
    )
    return _transformers.CLIPTextModel(config).eval()


def _tiny_unet(*, sample_size: int, in_channels: int, **extra: Any) -> Any:
    """A two-level UNet with cross-attention in its second level, the smallest that keeps SD's shape."""
    return _diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN_SIZE,
        norm_num_groups=4,
        attention_head_dim=2,
        **extra,
    ).eval()


def _tiny_vae(*, blocks: int, scaling_factor: float = 0.18215) -> Any:
    """An ``AutoencoderKL`` with ``blocks`` blocks: it downsamples by ``2 ** (blocks - 1)``."""
    return _diffusers.AutoencoderKL(
        block_out_channels=(4,) * blocks,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=64,
        scaling_factor=scaling_factor,
    ).eval()


@_quiet
def build_text2image(directory: Path, *, scheduler: Literal["ddim", "euler"] = "ddim") -> Path:
    """Save a tiny ``StableDiffusionPipeline`` in ``directory`` and return ``directory``.

    Load it with ``AutoPipelineForText2Image.from_pretrained(directory, dtype=torch.float32,
    local_files_only=True)``; it renders any size that is a multiple of 8 (64x64 by default). It has no safety
    checker (``requires_safety_checker=False``).

    ``scheduler`` picks the saved scheduler. ``"euler"`` (``EulerDiscreteScheduler``) is what SDXL-style
    checkpoints ship, but with numpy 2.4 and torch 2.13 its ``set_timesteps`` calls ``np.array`` on a tensor,
    which raises a ``DeprecationWarning`` ("__array__ implementation doesn't accept a copy keyword") on every
    render; ``"ddim"`` (the default) renders warning-free.
    """
    directory = Path(directory)
    torch.manual_seed(SEED)
    unet = _tiny_unet(sample_size=8, in_channels=4)
    vae = _tiny_vae(blocks=4)
    text_encoder = _tiny_text_encoder()
    pipe = _diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tiny_tokenizer(),
        unet=unet,
        scheduler=(
            _diffusers.DDIMScheduler(**_SD_SCHEDULE, clip_sample=False, set_alpha_to_one=False)
            if scheduler == "ddim"
            else _diffusers.EulerDiscreteScheduler(**_SD_SCHEDULE)
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory)
    return directory


@_quiet
def build_latent_upscaler(directory: Path) -> Path:
    """Save a tiny ``StableDiffusionLatentUpscalePipeline`` (SD x2 latent upscaler) in ``directory``.

    Load it with ``DiffusionPipeline.from_pretrained(directory, local_files_only=True)`` and call it with
    ``prompt=[...]``, ``image=`` a PIL image and e.g. ``num_inference_steps=2, guidance_scale=0``: the result
    is twice as wide and tall (64x64 in, 128x128 out). As with the real checkpoint, both sides must be
    multiples of 32 and at least 64 (the UNet downsamples the 2x latents three times). Returns ``directory``.

    Like ``stabilityai/sd-x2-latent-upscaler`` it uses ``EulerDiscreteScheduler`` (the pipeline needs its
    ``sigmas``), whose ``set_timesteps`` raises ``DeprecationWarning: __array__ implementation doesn't accept a
    copy keyword, ...`` with numpy 2.4 and torch 2.13 on every call.
    """
    directory = Path(directory)
    torch.manual_seed(SEED)
    # The K-diffusion blocks use group norms of 32 channels and only line up with four levels, as in diffusers'
    # own tests. The pipeline conditions on 128 noise-level features plus the text encoder's pooled output.
    unet = _diffusers.UNet2DConditionModel(
        act_fn="gelu",
        attention_head_dim=8,
        norm_num_groups=None,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        time_cond_proj_dim=128 + TEXT_HIDDEN_SIZE,
        conv_in_kernel=1,
        conv_out_kernel=1,
        cross_attention_dim=TEXT_HIDDEN_SIZE,
        down_block_types=("KDownBlock2D",) + ("KCrossAttnDownBlock2D",) * 3,
        up_block_types=("KCrossAttnUpBlock2D",) * 3 + ("KUpBlock2D",),
        in_channels=8,
        out_channels=5,
        mid_block_type=None,
        only_cross_attention=False,
        resnet_time_scale_shift="scale_shift",
        time_embedding_type="fourier",
        timestep_post_act="gelu",
        sample_size=16,
    ).eval()
    vae = _tiny_vae(blocks=4)
    text_encoder = _tiny_text_encoder(hidden_act="quick_gelu")
    pipe = _diffusers.StableDiffusionLatentUpscalePipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tiny_tokenizer(),
        unet=unet,
        scheduler=_diffusers.EulerDiscreteScheduler(prediction_type="sample"),
    )
    pipe.save_pretrained(directory)
    return directory


@_quiet
def build_x4_upscaler(directory: Path) -> Path:
    """Save a tiny ``StableDiffusionUpscalePipeline`` (SD x4 upscaler) in ``directory``.

    Load it with ``DiffusionPipeline.from_pretrained(directory, local_files_only=True)`` and call it with
    ``prompt=[...]``, ``image=`` a PIL image (sides multiples of 4, e.g. 32x32 or 64x64) and e.g.
    ``num_inference_steps=2``: the result is four times as wide and tall. It has no safety checker or
    watermarker. Returns ``directory``.
    """
    directory = Path(directory)
    torch.manual_seed(SEED)
    # Latents have the low-resolution image's size; the UNet sees them next to the noised RGB image (4 + 3
    # channels) and takes the noise level as a class label, so it needs more classes than max_noise_level.
    unet = _tiny_unet(sample_size=16, in_channels=7, use_linear_projection=True, num_class_embeds=1000)
    # Three blocks: the VAE decoder upsamples latents 4x.
    vae = _tiny_vae(blocks=3, scaling_factor=_X4_VAE_SCALING_FACTOR)
    text_encoder = _tiny_text_encoder(hidden_act="gelu")
    pipe = _diffusers.StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tiny_tokenizer(),
        unet=unet,
        low_res_scheduler=_diffusers.DDPMScheduler(clip_sample=False),
        scheduler=_diffusers.DDIMScheduler(
            beta_schedule="scaled_linear",
            clip_sample=False,
            prediction_type="v_prediction",
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        max_noise_level=350,
    )
    pipe.save_pretrained(directory)
    return directory


@_quiet
def build_safety_checker(directory: Path, *, flag_everything: bool) -> Path:
    """Save a tiny ``StableDiffusionSafetyChecker`` and its image processor together in ``directory``.

    The layout matches ``CompVis/stable-diffusion-safety-checker`` (``config.json``, weights and
    ``preprocessor_config.json`` in one folder). The checker flags an image when the cosine similarity of its
    embedding to a concept exceeds that concept's threshold; similarities lie in [-1, 1], so thresholds of -2
    flag every image (``flag_everything=True``) and thresholds of 2 flag none. Load it with
    ``StableDiffusionSafetyChecker.from_pretrained(directory)`` and the processor with
    ``CLIPImageProcessor.from_pretrained(directory)`` (or ``AutoImageProcessor``). Returns ``directory``.
    """
    directory = Path(directory)
    image_size = 32
    torch.manual_seed(SEED)
    config = _transformers.CLIPConfig(
        text_config={
            "hidden_size": TEXT_HIDDEN_SIZE,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "vocab_size": 1000,
            "max_position_embeddings": _MODEL_MAX_LENGTH,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    checker = _sd_safety_checker.StableDiffusionSafetyChecker(config).eval()
    threshold = -2.0 if flag_everything else 2.0
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(threshold)
    processor = _transformers.CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    checker.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


# -- single-file (original LDM layout) checkpoints --------------------------------------------------------------
#
# The inverse of diffusers' ``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint`` and
# ``convert_ldm_clip_checkpoint`` (diffusers/loaders/single_file_utils.py), i.e. what diffusers' script
# ``scripts/convert_diffusers_to_original_stable_diffusion.py`` does, written for any number of levels and
# ``layers_per_block`` (an int) so it covers the tiny models. SD 1.x only: no SDXL or OpenCLIP text encoders.

_LDM_UNET_PREFIX = "model.diffusion_model."
_LDM_VAE_PREFIX = "first_stage_model."
_LDM_CLIP_PREFIX = "cond_stage_model.transformer.text_model."
_LDM_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_LDM_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_LDM_VAE_TOP = {"conv_norm_out": "norm_out"}
_LDM_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_LDM_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_head(rest: str, names: dict[str, str]) -> str:
    """``rest`` with its leading module name (one or two dotted parts) replaced per ``names``, if listed."""
    for old, new in names.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def _ldm_unet_key(key: str, config: dict[str, Any]) -> str:
    """The original name (without ``model.diffusion_model.``) of a diffusers ``UNet2DConditionModel`` weight."""
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError(f"layers_per_block must be an int, not {layers!r}")
    per_level = layers + 1  # LDM numbers a level's resnets and then its down/upsampler consecutively
    if match := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        block = per_level * level + index + 1  # input_blocks.0 is conv_in
        if kind == "resnets":
            return f"input_blocks.{block}.0.{_rename_head(rest, _LDM_UNET_RESNET)}"
        return f"input_blocks.{block}.1.{rest}"
    if match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{per_level * (int(match[1]) + 1)}.0.op.{match[2]}"
    if match := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(match[1])}.{_rename_head(match[2], _LDM_UNET_RESNET)}"
    if match := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{match[1]}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        block = per_level * level + index
        if kind == "resnets":
            return f"output_blocks.{block}.0.{_rename_head(rest, _LDM_UNET_RESNET)}"
        return f"output_blocks.{block}.1.{rest}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        level = int(match[1])
        # The upsampler follows the level's last resnet, and its attention if the level has one.
        slot = 2 if "CrossAttn" in config["up_block_types"][level] else 1
        return f"output_blocks.{per_level * level + layers}.{slot}.conv.{match[2]}"
    renamed = _rename_head(key, _LDM_UNET_TOP)
    if renamed == key:
        raise ValueError(f"no original (LDM) name for UNet weight {key!r}")
    return renamed


def _ldm_vae_key(key: str, config: dict[str, Any]) -> str:
    """The original name (without ``first_stage_model.``) of a diffusers ``AutoencoderKL`` weight."""
    levels = len(config["down_block_types"])
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    side, _, rest = key.partition(".")
    if side not in ("encoder", "decoder"):
        raise ValueError(f"no original (LDM) name for VAE weight {key!r}")
    if match := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        rest = f"down.{match[1]}.block.{match[2]}.{_rename_head(match[3], _LDM_VAE_RESNET)}"
    elif match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.(.+)", rest):
        rest = f"down.{match[1]}.downsample.{match[2]}"
    elif match := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        # The decoder's levels run the other way round: diffusers' up_blocks.0 is LDM's up.{levels - 1}.
        level = levels - 1 - int(match[1])
        rest = f"up.{level}.block.{match[2]}.{_rename_head(match[3], _LDM_VAE_RESNET)}"
    elif match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest):
        rest = f"up.{levels - 1 - int(match[1])}.upsample.{match[2]}"
    elif match := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        rest = f"mid.block_{int(match[1]) + 1}.{_rename_head(match[2], _LDM_VAE_RESNET)}"
    elif match := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
        rest = f"mid.attn_1.{_rename_head(match[1], _LDM_VAE_ATTENTION)}"
    else:
        rest = _rename_head(rest, _LDM_VAE_TOP)
    return f"{side}.{rest}"


def _add_weights(
    checkpoint: dict[str, torch.Tensor],
    prefix: str,
    weights: dict[str, torch.Tensor],
    rename: Callable[[str], str],
) -> None:
    """Add ``weights`` to ``checkpoint`` as ``prefix + rename(key)``, refusing two weights under one name."""
    for key, tensor in weights.items():
        name = prefix + rename(key)
        if name in checkpoint:
            raise ValueError(f"two weights map to {name!r}")
        checkpoint[name] = tensor.contiguous()


def build_single_file(directory: Path) -> tuple[Path, Path]:
    """Save a tiny SD 1.x single-file checkpoint and its diffusers config folder; return both paths.

    :func:`build_text2image` saves the pipeline in ``directory / "config"`` (weights included), and its UNet,
    VAE and CLIP text encoder weights are written to ``directory / "model.safetensors"`` under their original
    CompVis/LDM names (``model.diffusion_model.*``, ``first_stage_model.*`` and
    ``cond_stage_model.transformer.text_model.*``), as community checkpoints are. Load it the way Easel does::

        StableDiffusionPipeline.from_single_file(str(checkpoint), config=str(config_dir),
            local_files_only=True, dtype=torch.float32, safety_checker=None, requires_safety_checker=False)

    With ``config=`` diffusers takes every component's config (and the scheduler and tokenizer) from the folder
    and does not guess the model type from the checkpoint's keys; the UNet, VAE and text encoder weights come
    from the checkpoint. It renders the same images as the folder itself. Returns ``(checkpoint, config_dir)``.
    """
    directory = Path(directory)
    config_dir = build_text2image(directory / "config")
    unet_config = json.loads((config_dir / "unet" / "config.json").read_text(encoding="utf-8"))
    vae_config = json.loads((config_dir / "vae" / "config.json").read_text(encoding="utf-8"))
    checkpoint: dict[str, torch.Tensor] = {}
    _add_weights(
        checkpoint,
        _LDM_UNET_PREFIX,
        load_file(config_dir / "unet" / "diffusion_pytorch_model.safetensors"),
        lambda key: _ldm_unet_key(key, unet_config),
    )
    vae = load_file(config_dir / "vae" / "diffusion_pytorch_model.safetensors")
    for key, tensor in vae.items():
        # LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers.
        if ".mid_block.attentions." in key and key.endswith(".weight") and tensor.ndim == 2:
            vae[key] = tensor[:, :, None, None]
    _add_weights(checkpoint, _LDM_VAE_PREFIX, vae, lambda key: _ldm_vae_key(key, vae_config))
    _add_weights(
        checkpoint,
        _LDM_CLIP_PREFIX,
        load_file(config_dir / "text_encoder" / "model.safetensors"),
        lambda key: key.removeprefix("text_model."),
    )
    path = directory / "model.safetensors"
    save_file(checkpoint, path, metadata={"format": "pt"})
    return path, config_dir
