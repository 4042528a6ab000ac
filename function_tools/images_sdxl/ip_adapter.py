"""IP-Adapter for the ``sdxl`` backend: keyframes conditioned on the characters' portraits.

Why: a keyframe drawn from its prompt alone shows a different person in every
shot.  IP-Adapter (Ye et al. 2023) adds image cross-attention to SDXL's UNet, so
each keyframe also attends to the CLIP image embedding of its characters'
portraits.  Loaded through diffusers' ``load_ip_adapter`` from local paths in
the profile (``images_sdxl.options``)::

    ip_adapter_path: /models/IP-Adapter          # folder holding the weights (e.g. h94/IP-Adapter)
    ip_adapter_subfolder: sdxl_models            # default ""
    ip_adapter_weight_name: ip-adapter_sdxl.safetensors
    ip_adapter_image_encoder: /models/IP-Adapter/sdxl_models/image_encoder   # a CLIPVisionModelWithProjection
    ip_adapter_scale: 0.6                        # how strongly the portrait steers (0 = not at all)

Without ``ip_adapter_path`` references are recorded and ignored
(``ignored_options``).  With it, every request runs through the adapter: one
without portraits at scale 0 (a blank image; the result is the plain render).

Regions (:func:`region_boxes`): with one character in the frame the portrait
steers the whole frame.  With two or more, each referenced character gets a
vertical band through ``IPAdapterMaskProcessor`` masks, from the request's
``reference_layout``: ``left_right`` (and ``auto``) splits the width evenly in
``characters`` order, left to right — the storyboard's order too; ``speaker_front``
gives the first character (the speaker) the middle half and the others the
outer quarters, alternating left and right.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from function_tools.images_sdxl.models import ImagesSdxlRequest
from sparkle_motion.errors import ConfigError, InvalidInputError
from sparkle_motion.services.context import ToolContext

DEFAULT_SCALE = 0.6
MAX_PORTRAIT_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class IpAdapterOptions:
    path: str
    subfolder: str
    weight_name: str
    image_encoder: str
    scale: float

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "IpAdapterOptions | None":
        path = options.get("ip_adapter_path")
        if not path:
            return None
        encoder = options.get("ip_adapter_image_encoder")
        if not encoder:
            raise ConfigError("options.ip_adapter_image_encoder (a CLIPVisionModelWithProjection folder) is "
                              "required with ip_adapter_path", field="options.ip_adapter_image_encoder")
        scale = float(options.get("ip_adapter_scale", DEFAULT_SCALE))
        if not 0.0 <= scale <= 2.0:
            raise ConfigError("options.ip_adapter_scale must be within 0..2", field="options.ip_adapter_scale")
        return cls(path=str(Path(str(path)).expanduser()), subfolder=str(options.get("ip_adapter_subfolder") or ""),
                   weight_name=str(options.get("ip_adapter_weight_name", "ip-adapter_sdxl.safetensors")),
                   image_encoder=str(Path(str(encoder)).expanduser()), scale=scale)

    @property
    def key(self) -> str:
        return f"+ip:{Path(self.path, self.subfolder, self.weight_name)}"


def load_into(pipe: Any, opts: IpAdapterOptions, torch_dtype: Any) -> None:
    """Load the image encoder and the adapter weights into ``pipe`` (before it is placed on the device)."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(opts.image_encoder, dtype=torch_dtype)
        if (Path(opts.image_encoder) / "preprocessor_config.json").is_file():
            processor = CLIPImageProcessor.from_pretrained(opts.image_encoder)
        else:
            side = int(encoder.config.image_size)
            processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        pipe.register_modules(image_encoder=encoder, feature_extractor=processor)
        pipe.load_ip_adapter(opts.path, subfolder=opts.subfolder, weight_name=opts.weight_name,
                             image_encoder_folder=None)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot load the IP-Adapter: {exc}", field="options.ip_adapter_path",
                          context={"path": opts.path, "weight_name": opts.weight_name,
                                   "image_encoder": opts.image_encoder}) from exc


def region_boxes(characters: list[str], layout: str) -> dict[str, tuple[float, float]]:
    """Each character's horizontal band (x0, x1 as fractions of the width); see the module doc."""
    n = len(characters)
    if n <= 1:
        return {name: (0.0, 1.0) for name in characters}
    if layout != "speaker_front":
        return {name: (i / n, (i + 1) / n) for i, name in enumerate(characters)}
    boxes = {characters[0]: (0.25, 0.75)}
    for i, name in enumerate(characters[1:]):
        boxes[name] = (0.0, 0.25) if i % 2 == 0 else (0.75, 1.0)
    return boxes


def _portrait(ctx: ToolContext, uri: str, field_name: str) -> tuple[Any, Image.Image]:
    manifest, path = ctx.resolve_input(uri, field_name)
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PORTRAIT_PIXELS:
                raise InvalidInputError(f"portrait is {image.width}x{image.height}; at most {MAX_PORTRAIT_PIXELS} "
                                        "pixels", field=field_name)
            return manifest, image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInputError(f"portrait is not a readable image ({exc})", field=field_name) from None


def request_kwargs(pipe: Any, request: ImagesSdxlRequest, ctx: ToolContext, opts: IpAdapterOptions,
                   width: int, height: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline arguments that condition on the request's portraits, and what to record about them."""
    portraits = []
    for index, ref in enumerate(request.references):
        if ref.uri is not None:
            manifest, image = _portrait(ctx, ref.uri, f"references[{index}].uri")
            portraits.append((ref.character.strip(), manifest, image))
    if not portraits:
        pipe.set_ip_adapter_scale(0.0)
        return {"ip_adapter_image": [Image.new("RGB", (64, 64))]}, {"scale": 0.0, "references": []}
    boxes = region_boxes(request.characters, request.reference_layout)
    record: dict[str, Any] = {"scale": opts.scale, "layout": request.reference_layout,
                              "references": [{"character": name, "uri": m.uri, "sha256": m.sha256,
                                              "region": list(boxes[name])} for name, m, _ in portraits]}
    images = [image for _, _, image in portraits]
    if len(request.characters) <= 1:
        pipe.set_ip_adapter_scale(opts.scale)
        return {"ip_adapter_image": [images]}, record
    from diffusers.image_processor import IPAdapterMaskProcessor

    masks = []
    for name, _, _ in portraits:
        x0, x1 = boxes[name]
        mask = Image.new("L", (width, height), 0)
        mask.paste(255, (round(x0 * width), 0, round(x1 * width), height))
        masks.append(mask)
    tensor = IPAdapterMaskProcessor().preprocess(masks, height=height, width=width)
    pipe.set_ip_adapter_scale([[opts.scale] * len(images)])
    record["masks"] = len(masks)
    return ({"ip_adapter_image": [images],
             "cross_attention_kwargs": {"ip_adapter_masks": [tensor.reshape(1, tensor.shape[0], *tensor.shape[2:])]}},
            record)


class ImageEmbedsProbe:
    """Records the image embeddings the UNet receives (``added_cond_kwargs['image_embeds']``): proof, per
    keyframe, that the portraits reached the denoiser — shapes and norms, from the first UNet call."""

    def __init__(self, unet: Any) -> None:
        self.seen: list[dict[str, Any]] = []
        self._handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        if self.seen:
            return
        embeds = (kwargs.get("added_cond_kwargs") or {}).get("image_embeds")
        for tensor in embeds or []:
            self.seen.append({"shape": list(tensor.shape), "norm": round(float(tensor.float().norm()), 4)})

    def close(self) -> None:
        self._handle.remove()


@contextmanager
def closing(probe: ImageEmbedsProbe | None) -> Iterator[None]:
    """Remove the probe's hook however the render ends (the pipeline stays warm for the next request)."""
    try:
        yield
    finally:
        if probe is not None:
            probe.close()
