"""Attention maps from a vision-language model and a text prompt (the map generator of "Learning to
Look", Yang et al. 2025). Plain torch and open_clip, no Lightning import.

Given images and a foreground text prompt ("a digit", "a lung nodule") plus a few background
prompts, :class:`VLMMapGenerator` returns one map in [0, 1] per image at the image's resolution:

* ``gradcam`` (the CLIP-ES recipe): the image-text scores ``s = softmax(scale * <I, T_k>)`` over
  the foreground and background prompts; the Grad-CAM of the foreground score on the patch tokens
  entering the last transformer block's attention (the output ``X`` of its first layer norm,
  CLIP-ES's target layer), ``cam = relu(sum_d mean_n(ds/dX_nd) X_nd)``. (The block's *output*
  patch tokens get no gradient: only the class token leaves the last block.)
* ``similarity`` (cheaper, no backward pass): each patch token of the last block is projected into
  the joint space like the class token (``ln_post``, ``proj``) and scored against the prompts; the
  map is the patch's softmax probability of the foreground prompt.

Each prompt is embedded through every template (``"a photo of {}."``) and the normalised
embeddings are averaged (prompt ensembling). Maps are min-max normalised per image, then optional
post-processing applies (:func:`postprocess_maps`).

Weights are only ever read from a local file or folder (:func:`load_clip`); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import VisionTransformer

from vapl.core.errors import UserInputError

MAP_METHODS = ("gradcam", "similarity")
#: A tiny CLIP of our own for tests and the demo (random weights: its maps are meaningless).
TINY_CLIP_NAME = "vapl-tiny-clip"
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
#: The checkpoint names looked for inside a weights folder, in this order.
CHECKPOINT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "model.pt",
    "model.pth",
)
DEFAULT_TEMPLATES = ("a photo of {}.",)
DEFAULT_BACKGROUND = ("the background",)


class WeightsNotFoundError(UserInputError, FileNotFoundError):
    """The CLIP weights the configuration names are not on disk (they are never downloaded)."""


def model_config(model_name: str) -> dict[str, Any]:
    """The open_clip architecture config of ``model_name`` (``vapl-tiny-clip`` is ours)."""
    if model_name == TINY_CLIP_NAME:
        return json.loads(json.dumps(TINY_CLIP_CONFIG))
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ValueError(
            f"unknown open_clip architecture {model_name!r}; choose one of "
            f"open_clip.list_models() (e.g. ViT-B-16) or {TINY_CLIP_NAME!r}"
        )
    return config


def resolve_weights(weights: str | Path | None, model_name: str) -> Path:
    """The checkpoint file named by ``weights`` (a file, or a folder holding one), else a
    :class:`WeightsNotFoundError` that says what to put where."""
    hint = (
        f"Put an open_clip checkpoint of {model_name} on disk once and name the file or its "
        f"folder in `vlm_weights` (model) or `--data.init_args.vlm_weights` (text-prompt "
        f"datamodule). For OpenAI's ViT-B/16 (architecture ViT-B-16-quickgelu): `huggingface-cli "
        f"download timm/vit_base_patch16_clip_224.openai open_clip_pytorch_model.bin "
        f"--local-dir weights/clip/ViT-B-16-quickgelu`. Looked for in a folder: "
        f"{', '.join(CHECKPOINT_NAMES)}. vapl never downloads weights itself."
    )
    if weights is None:
        raise WeightsNotFoundError(f"no CLIP weights configured for {model_name}. {hint}")
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / name).is_file():
                return path / name
        raise WeightsNotFoundError(f"{path}: folder holds no CLIP checkpoint. {hint}")
    raise WeightsNotFoundError(f"{path}: no such file or folder. {hint}")


def load_clip(
    model_name: str, weights: str | Path | None = None, random_init: bool = False, seed: int = 0
) -> tuple[torch.nn.Module, SimpleTokenizer, str]:
    """``(model, tokenizer, identity)``: an open_clip CLIP in eval mode with frozen parameters.

    ``random_init`` builds it with random weights from ``seed`` (tests, the demo); otherwise the
    weights come from :func:`resolve_weights`. ``identity`` names the weights for the map cache.
    """
    config = model_config(model_name)
    if "timm_model_name" in config.get("vision_cfg", {}) or "hf_model_name" in config.get(
        "text_cfg", {}
    ):
        raise ValueError(
            f"{model_name}: only open_clip's own ViT towers with the bundled BPE tokenizer are "
            "supported (no timm or Hugging Face towers, which would fetch files)"
        )
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.CLIP(**config)
        identity = f"{model_name}:random:{seed}:{json.dumps(config, sort_keys=True)}"
    else:
        path = resolve_weights(weights, model_name)
        model = open_clip.CLIP(**config)
        open_clip.load_checkpoint(model, str(path))
        stat = path.stat()
        identity = f"{model_name}:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if not isinstance(model.visual, VisionTransformer):
        raise ValueError(f"{model_name}: the map generator needs a ViT image tower")
    model.eval().requires_grad_(False)
    tokenizer = SimpleTokenizer(context_length=config["text_cfg"].get("context_length", 77))
    return model, tokenizer, identity


def min_max(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each map of [B, H, W] into [0, 1]; a constant map becomes all zero."""
    flat = maps.flatten(1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    peak = flat.max(dim=1, keepdim=True).values
    return torch.where(peak > eps, flat / peak.clamp_min(eps), torch.zeros_like(flat)).view_as(maps)


def _dilate(maps: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(maps[:, None], 2 * radius + 1, stride=1, padding=radius)[:, 0]


def postprocess_maps(
    maps: torch.Tensor, threshold: float | None = None, dilation: int = 0, edge_band: int = 0
) -> torch.Tensor:
    """Optional post-processing of [B, H, W] maps in [0, 1], in this order:

    * ``threshold``: values below it become 0 (the rest keep their value);
    * ``dilation``: grey dilation (a max filter) of radius ``dilation`` pixels, widening the region;
    * ``edge_band``: keep only a band of width ``2 * edge_band + 1`` pixels around the region's
      boundary: the morphological gradient (dilation minus erosion), rescaled to [0, 1].
    """
    if threshold is not None:
        maps = torch.where(maps >= threshold, maps, torch.zeros_like(maps))
    if dilation > 0:
        maps = _dilate(maps, dilation)
    if edge_band > 0:
        maps = min_max(_dilate(maps, edge_band) + _dilate(-maps, edge_band))
    return maps


class VLMMapGenerator:
    """Text prompt -> attention map per image (see the module docstring). Not an ``nn.Module``: a
    method that holds one does not train, checkpoint or optimise the CLIP weights.

    Args:
        model_name: an open_clip architecture (``ViT-B-16-quickgelu``) or ``vapl-tiny-clip``.
        weights: the checkpoint file or a folder holding one (see :func:`resolve_weights`).
        random_init: random weights instead (tests and the demo only).
        foreground: the text prompt for what the classifier should look at.
        background: prompts for the rest (the foreground competes with them in the softmax).
        templates: sentence templates with one ``{}``; each prompt is averaged over them.
        method: ``gradcam`` or ``similarity``.
        threshold, dilation, edge_band: :func:`postprocess_maps`.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-16-quickgelu",
        weights: str | None = None,
        random_init: bool = False,
        foreground: str = "an object",
        background: Sequence[str] = DEFAULT_BACKGROUND,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        method: str = "gradcam",
        threshold: float | None = None,
        dilation: int = 0,
        edge_band: int = 0,
        seed: int = 0,
    ) -> None:
        if method not in MAP_METHODS:
            raise ValueError(f"unknown map method {method!r}; choose one of {MAP_METHODS}")
        if not background:
            raise ValueError("give at least one background prompt")
        for template in templates:
            if template.count("{}") != 1:
                raise ValueError(f"prompt template {template!r} must hold exactly one '{{}}'")
        self.model, self.tokenizer, self.model_identity = load_clip(
            model_name, weights, random_init, seed
        )
        self.model_name = model_name
        self.prompts = [foreground, *background]
        self.templates = list(templates)
        self.method = method
        self.threshold = threshold
        self.dilation = dilation
        self.edge_band = edge_band
        visual = self.model.visual
        self.input_size = tuple(visual.image_size)
        self.mean = torch.tensor(
            getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        )
        self.std = torch.tensor(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        self.text_embeddings = self._embed_prompts()

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    def to(self, device: torch.device | str) -> VLMMapGenerator:
        self.model.to(device)
        self.text_embeddings = self.text_embeddings.to(device)
        return self

    def identity(self) -> dict[str, Any]:
        """Everything a map depends on besides the image: the map cache's key."""
        return {
            "model": self.model_identity,
            "prompts": self.prompts,
            "templates": self.templates,
            "method": self.method,
            "threshold": self.threshold,
            "dilation": self.dilation,
            "edge_band": self.edge_band,
        }

    def key(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @torch.no_grad()
    def _embed_prompts(self) -> torch.Tensor:
        """[K, D] normalised embeddings, foreground first, each averaged over the templates."""
        embeddings = []
        for prompt in self.prompts:
            tokens = self.tokenizer([t.format(prompt) for t in self.templates])
            text = F.normalize(self.model.encode_text(tokens.to(self.device)), dim=-1)
            embeddings.append(F.normalize(text.mean(dim=0), dim=-1))
        return torch.stack(embeddings)

    def clip_input(self, images: torch.Tensor) -> torch.Tensor:
        """Our images (any normalisation, 1 or 3 channels) as CLIP input: each image min-max
        scaled to [0, 1], grey repeated to RGB, resized to the model's size, CLIP-normalised."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be [B, 1 or 3, H, W], got {tuple(images.shape)}")
        x = images.float()
        low = x.flatten(1).min(dim=1).values.view(-1, 1, 1, 1)
        high = x.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
        x = (x - low) / (high - low).clamp_min(1e-8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)

    def _tokens(
        self, x: torch.Tensor, module: torch.nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image embedding [B, D], tokens [B, 1 + N, W] that ``module`` outputs)``; the tokens
        are a leaf that requires gradients, and the embedding is computed from them."""
        captured: list[torch.Tensor] = []

        def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            leaf = output.detach().requires_grad_(True)
            captured.append(leaf)
            return leaf

        handle = module.register_forward_hook(hook)
        try:
            embedding = self.model.encode_image(x, normalize=True)
        finally:
            handle.remove()
        return embedding, captured[0]

    def _grid(self) -> tuple[int, int]:
        return tuple(self.model.visual.grid_size)

    def raw_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised maps [B, h, w] on the patch grid."""
        x = self.clip_input(images.to(self.device))
        scale = self.model.logit_scale.exp()
        last_block = self.model.visual.transformer.resblocks[-1]
        with torch.enable_grad():
            if self.method == "gradcam":
                embedding, tokens = self._tokens(x, last_block.ln_1)
                scores = torch.softmax(scale * embedding @ self.text_embeddings.T, dim=1)[:, 0]
                (gradient,) = torch.autograd.grad(scores.sum(), tokens)
                patches, gradient = tokens[:, 1:].detach(), gradient[:, 1:]
                weights = gradient.mean(dim=1, keepdim=True)
                flat = torch.relu((weights * patches).sum(dim=-1))
            else:
                _, tokens = self._tokens(x, last_block)
                visual = self.model.visual
                patches = visual.ln_post(tokens[:, 1:].detach())
                if visual.proj is not None:
                    patches = patches @ visual.proj
                similarity = scale * F.normalize(patches, dim=-1) @ self.text_embeddings.T
                flat = torch.softmax(similarity, dim=-1)[..., 0]
        return flat.detach().view(len(x), *self._grid())

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Maps [B, H, W] in [0, 1] at the images' resolution, on the generator's device."""
        raw = self.raw_maps(images)
        size = tuple(images.shape[-2:])
        maps = F.interpolate(raw[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return postprocess_maps(min_max(maps), self.threshold, self.dilation, self.edge_band)
