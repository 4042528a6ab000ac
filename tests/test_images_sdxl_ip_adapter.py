"""images_sdxl `sdxl` with an IP-Adapter: keyframes conditioned on portraits, with a tiny random-weight adapter.

The tiny SDXL, a random IP-Adapter state dict and a tiny CLIP image encoder are
loaded from disk through ``load_ip_adapter`` as a real profile would; a forward
hook on the UNet checks that the portraits' image embeddings reach it (and the
backend's own record says the same), two portraits give two different images
at the same seed, and two characters get masked regions.
"""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers", reason="the sdxl backend needs the [gpu] extra (diffusers, torch)")

from sparkle_motion.artifacts import ArtifactStore  # noqa: E402
from tiny_models import write_gpu_profile  # noqa: E402
from tiny_models.sdxl import TINY_OPTIONS, build_tiny_ip_adapter, build_tiny_sdxl  # noqa: E402

pytestmark = pytest.mark.xdist_group("images_sdxl_tiny")

RUN = "sdxl-ip"


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory):
    from function_tools.images_sdxl.sdxl import SdxlBackend
    from function_tools.images_sdxl.service import SPEC
    from sparkle_motion.config import load_settings
    from sparkle_motion.logs import get_logger
    from sparkle_motion.services.context import ToolContext

    root = tmp_path_factory.mktemp("tiny-sdxl-ip")
    base = build_tiny_sdxl(root / "base")
    adapter, encoder = build_tiny_ip_adapter(base, root / "ip")
    home = root / "home"
    profile_path = write_gpu_profile(root / "profile.yaml", "images_sdxl", model=str(base), options={
        **TINY_OPTIONS, "ip_adapter_path": str(adapter), "ip_adapter_weight_name": "ip-adapter_tiny.safetensors",
        "ip_adapter_image_encoder": str(encoder), "ip_adapter_scale": 1.0})
    settings = load_settings({"SPARKLE_PROFILE": str(profile_path), "SPARKLE_HOME": str(home)})
    profile = settings.tool_profile("images_sdxl")
    store = ArtifactStore(home)
    backend = SdxlBackend(profile, settings)
    backend.load()

    def invoke(**payload):
        ctx = ToolContext(tool_id="images_sdxl", tool_version=SPEC.version, backend=profile.backend,
                          model=profile.model, options=profile.options, settings=settings, store=store,
                          request_id="ip", log=get_logger("test"))
        request = SPEC.request_model.model_validate({"run_id": RUN, "width": 64, "height": 64, "seed": 5, **payload})
        return backend.invoke(request, ctx)

    def portrait(colour: tuple[int, int, int]) -> str:
        image = Image.new("RGB", (64, 64), colour)
        path = root / f"portrait_{'_'.join(map(str, colour))}.png"
        image.save(path)
        return store.put("uploads", "uploads", "reference_image", path, "image/png").uri

    yield backend, invoke, portrait, store
    backend.close()
    store.close()


def pixels(store: ArtifactStore, response) -> np.ndarray:
    with Image.open(store.path_for(response.images[0].artifact.uri)) as png:
        return np.asarray(png.convert("RGB")).astype(np.int32)


def test_portrait_embeddings_reach_the_unet_and_change_the_image(parts):
    from sparkle_motion.gpu.warm import current

    backend, invoke, portrait, store = parts
    red, blue = portrait((220, 30, 30)), portrait((30, 30, 220))
    seen: list[list[int]] = []

    plain = invoke(prompt="Kit on a roof", characters=["Kit"])
    unet = current().model.base.unet  # the warm pipeline the backend renders with

    def capture(_module, _args, kwargs):
        embeds = (kwargs.get("added_cond_kwargs") or {}).get("image_embeds")
        if embeds is not None:
            seen.append([list(t.shape) for t in embeds])

    hook = unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with_red = invoke(prompt="Kit on a roof", characters=["Kit"], references=[{"character": "Kit", "uri": red}])
        with_blue = invoke(prompt="Kit on a roof", characters=["Kit"],
                           references=[{"character": "Kit", "uri": blue}])
    finally:
        hook.remove()
    meta = store.get(with_red.images[0].artifact.uri).metadata
    record = meta["params"]["ip_adapter"]
    assert record["scale"] == 1.0 and [r["uri"] for r in record["references"]] == [red]
    assert meta["conditioned_on"][0]["sha256"] == store.get(red).sha256
    # The backend's own probe on the UNet: one adapter, (cfg batch 2, 1 image, 64-dim CLIP embedding).
    assert [e["shape"] for e in record["unet_image_embeds"]] == [[2, 1, 64]]
    assert seen and seen[0] == [[2, 1, 64]]
    # The same seed and prompt: a different portrait is a different image, and no portrait is the plain render.
    assert np.abs(pixels(store, with_red) - pixels(store, with_blue)).max() > 0
    assert np.abs(pixels(store, with_red) - pixels(store, plain)).max() > 0
    assert store.get(plain.images[0].artifact.uri).metadata["params"]["ip_adapter"]["scale"] == 0.0
    assert "references" not in with_red.ignored_options


def test_two_characters_get_masked_regions_in_prompt_order(parts):
    backend, invoke, portrait, store = parts
    red, blue = portrait((200, 40, 40)), portrait((40, 40, 200))
    refs = [{"character": "Kit", "uri": red}, {"character": "Ravi", "uri": blue}]
    response = invoke(prompt="Kit and Ravi on a roof", characters=["Kit", "Ravi"], references=refs)
    record = store.get(response.images[0].artifact.uri).metadata["params"]["ip_adapter"]
    assert record["masks"] == 2
    assert {r["character"]: r["region"] for r in record["references"]} == {"Kit": [0.0, 0.5], "Ravi": [0.5, 1.0]}
    assert [e["shape"] for e in record["unet_image_embeds"]] == [[2, 2, 64]]
    front = invoke(prompt="Kit and Ravi on a roof", characters=["Kit", "Ravi"], references=refs,
                   reference_layout="speaker_front")
    regions = {r["character"]: r["region"]
               for r in store.get(front.images[0].artifact.uri).metadata["params"]["ip_adapter"]["references"]}
    assert regions == {"Kit": [0.25, 0.75], "Ravi": [0.0, 0.25]}
