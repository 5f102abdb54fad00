"""The nodes' ``execute`` on tiny real models, through the ComfyUI adapter.

ComfyUI itself is absent in CI: its own modules come from the minimal stand-in in
``tests/comfyui_stub`` (see its README), and the models are tiny diffusers/transformers modules dressed
as ComfyUI's MODEL/CLIP/VAE objects, built under ``torch.inference_mode()`` as ComfyUI's loaders build
theirs. ``tests/test_comfyui_real.py`` runs the same nodes in a real ComfyUI (opt-in).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

STUB = Path(__file__).resolve().parent / "comfyui_stub"
if str(STUB) not in sys.path:
    sys.path.insert(0, str(STUB))

import comfy.model_management as mm  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402
import tiny_host  # noqa: E402

# Shortest honest training run (the same schedule shortening as tests/conftest.py's FAST).
FAST = "\n".join([
    "pefl.inference_steps=4", "pefl.noise_level=2", "pefl.grad_levels=[0, 1]",
    "aesthetic.inference_steps=4", "aesthetic.grad_levels=[0, 1]",
    "adversarial.inference_steps=2", "adversarial.grad_levels=[0, 1]",
    "logging.checkpoint_every=1", "logging.validate_every=0", "logging.validation_prompts=['a red cat']",
])


@pytest.fixture(scope="module")
def comfy_base(tmp_path_factory):
    """A ComfyUI base folder (models/, input/, output/) with a captioned image folder in input/."""
    from PIL import Image

    base = tmp_path_factory.mktemp("comfy-base")
    folder_paths.set_base(str(base))
    from unifl.comfyui_nodes import paths

    paths.register_model_folders()
    data = base / "input" / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text("a red cat")
    return base


@pytest.fixture(scope="module")
def host(comfy_base):
    """(MODEL, CLIP, VAE) with inference-mode weights, as ComfyUI's CheckpointLoader returns them."""
    from unifl.core.diffusion.tiny import build_tiny_pipeline

    with torch.inference_mode():
        return tiny_host.comfy_objects(build_tiny_pipeline("sd15", seed=0))


@pytest.fixture(scope="module")
def nodes():
    from unifl.comfyui_nodes import NODES

    return {n.define_schema().node_id: n for n in NODES}


def run(node, **inputs):
    with torch.inference_mode():  # ComfyUI executes every node under inference mode
        return node.run(**inputs)


def reward(nodes, name):
    return run(nodes["UniFLLoadRewardModel"], model_name=name, aspect="auto", weight=1.0, use_model_threshold=True, threshold=0.0, kind="auto")[0]


def train(nodes, host, **overrides):
    model, clip, vae = host
    inputs = dict(
        model=model, clip=clip, vae=vae, stage="1", lora_name="unifl/s1", prompts="a red cat\na blue dog", image_folder="data",
        steps=2, learning_rate=1e-3, rank=4, alpha=4.0, lora_targets="attention", resolution=32, batch_size=1, gradient_accumulation=1,
        seed=0, mixed_precision="no", gradient_checkpointing=True, init_lora="(none)", overwrite=False, extra_settings=FAST,
        reward_1=reward(nodes, "builtin/colorfulness"), reward_2=reward(nodes, "builtin/sharpness"),
        perception_1=run(nodes["UniFLLoadPerceptionModel"], model_name="builtin/random-features", aspect="auto", weight=1.0, kind="auto")[0],
    )
    return run(nodes["UniFLTrainLoRA"], **(inputs | overrides))


def test_denoiser_is_the_diffusers_model_in_sigma_space(host):
    """Same weights, two hosts: the ComfyUI seam predicts what the diffusers implementation predicts."""
    from unifl.comfyui_nodes.denoiser import ComfyDenoiser
    from unifl.core.diffusion.diffusers_denoiser import DiffusersDenoiser
    from unifl.core.diffusion.tiny import build_tiny_pipeline

    reference = DiffusersDenoiser.from_pipeline(build_tiny_pipeline("sd15", seed=0))
    model, clip, vae = host
    with torch.inference_mode(False):
        seam = ComfyDenoiser(model, clip, vae, ["a red cat"])
        assert (seam.architecture, seam.prediction_type, seam.module_naming) == ("sd15", "epsilon", "ldm")
        torch.testing.assert_close(seam.alphas_cumprod.float(), reference.alphas_cumprod.float(), atol=1e-6, rtol=0)
        cond, ref_cond = seam.encode_prompts(["a red cat"] * 2), reference.encode_prompts(["a red cat"] * 2)
        x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([999, 20])
        torch.testing.assert_close(seam.predict_x0(x, t, cond), reference.predict_x0(x, t, ref_cond), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(seam.predict_model_output(x, t, cond), reference.predict_model_output(x, t, ref_cond), atol=1e-5, rtol=1e-5)
        images = torch.rand(1, 3, 16, 16)
        torch.testing.assert_close(seam.encode_images(images), reference.encode_images(images))
        z = torch.randn(1, 4, 8, 8, requires_grad=True)
        decoded = seam.decode_latents(z)
        assert decoded.requires_grad
        decoded.mean().backward()
        assert z.grad.abs().sum() > 0


def test_lora_goes_on_a_copy_and_trains_through_inference_weights(host):
    from unifl.comfyui_nodes.denoiser import ComfyDenoiser
    from unifl.core.lora.peft import LoRASettings, add_lora

    model, clip, vae = host
    with torch.inference_mode(False):
        seam = ComfyDenoiser(model, clip, vae, ["a red cat"])
        params = add_lora(seam.lora_target, LoRASettings(rank=2, alpha=2.0))
        loss = seam.predict_x0(torch.randn(1, 4, 8, 8), torch.tensor([500]), seam.encode_prompts(["a red cat"])).pow(2).mean()
        loss.backward()
    assert params and all(p.grad is not None for p in params)
    original = model.model.diffusion_model.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    assert type(original) is torch.nn.Linear, "peft must never wrap ComfyUI's own module tree"
    assert seam.lora_name_map("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q") == "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"


def test_unsupported_models_are_refused_by_name(host):
    from unifl.comfyui_nodes.denoiser import UnsupportedModel, architecture_of

    model = host[0].clone()

    class Flux:
        unet_config = {}

    class Segmind_Vega:  # an SDXL distillation: fewer transformer layers, SDXL's conditioning and key names
        unet_config = {"in_channels": 4}

    saved = model.model.model_config
    model.model.model_config = Flux()
    try:
        with pytest.raises(UnsupportedModel, match="Flux.*Stable Diffusion 1.x/2.x and SDXL"):
            architecture_of(model)
        model.model.model_config = Segmind_Vega()
        assert architecture_of(model) == "sdxl"
    finally:
        model.model.model_config = saved


def test_score_images_per_aspect(nodes, host):
    images = torch.rand(3, 32, 32, 3)
    out = run(nodes["UniFLScoreImages"], images=images, prompt="a cat", reward_1=reward(nodes, "builtin/colorfulness"), reward_3=reward(nodes, "builtin/exposure"))
    score_1, score_2, score_3, score_4, table = out.args
    assert score_2 == score_4 == 0.0 and isinstance(score_1, float) and isinstance(score_3, float)
    assert "color (colorfulness)" in table and "lighting (exposure)" in table and table.count("\n") == 6
    assert out.ui.as_dict() == {"text": (table,)}
    with pytest.raises(ValueError, match="2 lines for 3 images"):
        run(nodes["UniFLScoreImages"], images=images, prompt="a\nb", reward_1=reward(nodes, "builtin/colorfulness"))


def test_sigmas_and_sampler_are_the_contract(nodes, host):
    from unifl.core.diffusion.schedule import sampling_timesteps

    model = host[0]
    sigmas = run(nodes["UniFLFewStepSigmas"], model=model, steps=4, spacing="trailing")[0]
    table = model.model.model_sampling.sigmas
    torch.testing.assert_close(sigmas, torch.cat([table[[999, 749, 499, 249]], torch.zeros(1)]))
    leading = run(nodes["UniFLFewStepSigmas"], model=model, steps=20, spacing="leading")[0]
    torch.testing.assert_close(leading[:-1], table[sampling_timesteps(1000, 20, "leading")])
    assert run(nodes["UniFLFewStepSampler"], sampler="ddim")[0].name == "euler"  # ComfyUI's ddim = Euler in sigma space


def test_train_stage_1_then_2_into_models_loras(nodes, host, comfy_base):
    from unifl.core.lora.kohya import SamplerContract, read_lora_metadata

    comfy.sd.NOT_LOADED.clear()
    progress_before = len(comfy.utils.PROGRESS)
    # The queued graph (ComfyUI hands it to the node as a hidden input): checkpoint → LoraLoader → this node.
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15/my-base.safetensors"}},
        "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": "style.safetensors", "strength_model": 1.0, "strength_clip": 1.0}},
        "6": {"class_type": "UniFLTrainLoRA", "inputs": {"model": ["2", 0], "clip": ["2", 1], "vae": ["1", 2]}},
    }
    patched, name, curve = train(nodes, host, hidden={"PROMPT": graph, "UNIQUE_ID": "6"}).args
    path = comfy_base / "models" / "loras" / "unifl" / "s1.safetensors"
    assert name == "unifl/s1.safetensors" and path.is_file()
    meta = read_lora_metadata(path)
    assert meta["unifl.stage"] == "1" and meta["unifl.host"] == "comfyui" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_sd_model_name"] == "my-base.safetensors"
    assert SamplerContract.from_metadata(meta) is not None
    from safetensors.torch import load_file

    keys = load_file(str(path))
    assert keys and all(k.startswith("lora_unet_down_blocks_") or k.startswith("lora_unet_up_blocks_") or k.startswith("lora_unet_mid_block_") for k in keys)
    assert len(patched.patches) == len(keys) // 3 and comfy.sd.NOT_LOADED == []  # ComfyUI's loader takes every key
    assert curve.shape[0] == 1 and curve.shape[-1] == 3 and curve.dtype == torch.float32
    assert [p[0] for p in comfy.utils.PROGRESS[progress_before:] if p[2] is None] == [1, 2]
    assert list((comfy_base / "output" / "unifl_runs").glob("s1-*/checkpoints"))

    with pytest.raises(FileExistsError, match="overwrite"):
        train(nodes, host)  # refused before any training

    patched2, name2, _ = train(nodes, host, stage="2", lora_name="unifl/s2", init_lora="unifl/s1.safetensors").args
    meta2 = read_lora_metadata(comfy_base / "models" / "loras" / "unifl" / "s2.safetensors")
    assert meta2["unifl.stage"] == "2" and meta2["unifl.sampler.steps"] == "2" and meta2["unifl.sampler.cfg"] == "1.0"
    assert meta2["ss_sd_model_name"] == ""  # run without a graph (a script): the file name is unknown, not made up

    model, sampler, sigmas, cfg, steps, info = run(nodes["UniFLLoadLoRA"], model=host[0], lora_name=name2, strength=1.0).args
    assert (cfg, steps, sampler.name) == (1.0, 2, "euler") and len(sigmas) == 3 and "trailing" in info
    assert len(model.patches) == len(patched2.patches) and comfy.sd.NOT_LOADED == []


def test_checkpoint_name_follows_model_links_to_the_loader():
    from unifl.comfyui_nodes.graph import checkpoint_name

    graph = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "sdxl/base.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["1", 0], "sampling": "eps", "zsnr": False}},
        "3": {"class_type": "UniFLTrainLoRA", "inputs": {"model": ["2", 0]}},
        "4": {"class_type": "Loop", "inputs": {"model": ["5", 0]}},
        "5": {"class_type": "Loop", "inputs": {"model": ["4", 0]}},
        "6": {"class_type": "UniFLTrainLoRA", "inputs": {"model": ["4", 0]}},
        "7": {"class_type": "UniFLTrainLoRA", "inputs": {"model": ["99", 0]}},
    }
    assert checkpoint_name(graph, "3") == "sdxl/base.safetensors"
    assert checkpoint_name(graph, 3) == "sdxl/base.safetensors"
    assert checkpoint_name(graph, "6") == checkpoint_name(graph, "7") == checkpoint_name(None, "3") == checkpoint_name(graph, None) == ""


def test_pocket_images_train_out_of_the_box(nodes, host, comfy_base):
    """image_folder = "pocket": the embedded pocket world's captioned images, no folder to prepare."""
    import json

    from unifl.comfyui_nodes.train_jobs import SOURCE_IMAGES

    train(nodes, host, lora_name="unifl/pocket_data", image_folder="pocket", steps=1)
    assert (comfy_base / "models" / "loras" / "unifl" / "pocket_data.safetensors").is_file()
    run_dir = next((comfy_base / "output" / "unifl_runs").glob("pocket_data-*"))
    data = json.loads(next(run_dir.glob("checkpoints/step-*/state.json")).read_text())["config"]["data"]
    assert data["images"] == "pocket" and data["source_images"] == SOURCE_IMAGES
    with pytest.raises(FileNotFoundError, match="input directory"):
        train(nodes, host, lora_name="unifl/no_data", image_folder="no_such_folder")


def test_the_node_checks_the_run_before_it_trains(nodes, host, comfy_base):
    """The same pre-run check as `unifl train` and the tab: PeFL without images is named before any step, by the
    node input that fixes it. A new node has no image folder: the pocket world's shapes are asked for by name."""
    from unifl.comfyui_nodes.nodes.train_lora import UniFLTrainLoRA
    from unifl.core.training.preflight import PreflightError

    assert next(i for i in UniFLTrainLoRA.define_schema().inputs if i.id == "image_folder").default == ""
    with pytest.raises(PreflightError, match=r"^image_folder \(data.images\): this run needs real images"):
        train(nodes, host, lora_name="unifl/no_images", image_folder="")
    assert not (comfy_base / "models" / "loras" / "unifl" / "no_images.safetensors").exists()
    assert not list((comfy_base / "output" / "unifl_runs").glob("no_images-*/checkpoints"))


def test_interrupt_stops_training_cleanly(nodes, host, comfy_base):
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            train(nodes, host, lora_name="unifl/cancelled")
    finally:
        mm.interrupt_current_processing(False)
    assert not (comfy_base / "models" / "loras" / "unifl" / "cancelled.safetensors").exists()
    run_dir = next((comfy_base / "output" / "unifl_runs").glob("cancelled-*"))
    assert (run_dir / "cancelled.safetensors").is_file()  # the run folder keeps what was trained


def test_lora_names_stay_inside_the_lora_folder(comfy_base):
    from unifl.comfyui_nodes import paths

    for bad in ("../escape", "a/../../b", "", "x:y"):
        with pytest.raises(ValueError, match="lora_name"):
            paths.new_lora_path(bad, overwrite=False)
    assert paths.new_lora_path("unifl/ok.safetensors", overwrite=False).name == "ok.safetensors"


@pytest.fixture(scope="module")
def pair_folder(comfy_base):
    """input/pairs: six preference pairs (random 16 px images), aspects colour and detail."""
    import json

    from PIL import Image

    folder = comfy_base / "input" / "pairs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(6):
        for side in "ab":
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}{side}.png")
        rows.append({"prompt": "a red cat", "image_a": f"{i}a.png", "image_b": f"{i}b.png", "preferred": "a", "aspect": "color" if i % 2 else "detail"})
    (folder / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder


def test_train_reward_models_from_pairs(nodes, comfy_base, pair_folder):
    inputs = dict(pairs="pairs", backbone="pocket", output_folder="mine", steps=2, learning_rate=1e-3, batch_size=2, val_fraction=0.3, global_model=False, seed=0, overwrite=False)
    out = run(nodes["UniFLTrainRewardModel"], **inputs)
    report = out.args[0]
    assert "| color |" in report and "| detail |" in report
    files = sorted(p.name for p in (comfy_base / "models" / "unifl" / "rewards" / "mine").glob("*.safetensors"))
    assert files == ["color.safetensors", "detail.safetensors"]
    loaded = reward(nodes, "mine/color.safetensors")  # listed by the loader, kind and aspect from the file
    assert (loaded.kind, loaded.aspect) == ("pocket-reward", "color") and loaded.threshold is not None
    with pytest.raises(FileExistsError):
        run(nodes["UniFLTrainRewardModel"], **inputs)


def test_reward_training_registers_the_pocket_backbone_itself(nodes, comfy_base, pair_folder, monkeypatch):
    """The first UniFL node after ComfyUI starts may be this one: no loader has registered the pocket world yet."""
    from unifl.core.training import aspect_rewards
    from unifl.pocket import plugin

    monkeypatch.setattr(aspect_rewards, "REWARD_BACKBONES", {})
    monkeypatch.setattr(plugin, "_registered", False)
    report = run(nodes["UniFLTrainRewardModel"], pairs="pairs", backbone="pocket", output_folder="first_node", steps=1, learning_rate=1e-3, batch_size=2,
                 val_fraction=0.3, global_model=False, seed=0, overwrite=False).args[0]
    assert "| color |" in report and "pocket" in aspect_rewards.REWARD_BACKBONES


def test_cancel_stops_reward_training_within_a_step(nodes, comfy_base, pair_folder):
    """ComfyUI's Cancel during the first optimizer step: the node stops after that step and saves nothing."""
    from unifl.core.training.aspect_rewards import REWARD_BACKBONES, register_reward_backbone
    from unifl.pocket.models.rewards import MODEL_RESOLUTION, AspectReward

    steps_run = []

    class CancelledDuringFirstStep(AspectReward):
        def forward(self, images, prompts):
            if self.training:  # a training step (accuracy and α are scored in eval mode)
                steps_run.append(len(images))
                mm.interrupt_current_processing(True)  # what POST /interrupt does
            return super().forward(images, prompts)

    register_reward_backbone("test-cancel", CancelledDuringFirstStep, kind="pocket-reward", resolution=MODEL_RESOLUTION)
    inputs = dict(pairs="pairs", backbone="test-cancel", output_folder="cancelled", steps=500, learning_rate=1e-3, batch_size=2, val_fraction=0.3, global_model=False, seed=0, overwrite=False)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(nodes["UniFLTrainRewardModel"], **inputs)
    finally:
        mm.interrupt_current_processing(False)
        del REWARD_BACKBONES["test-cancel"]
    assert len(steps_run) == 1
    assert not list((comfy_base / "models" / "unifl" / "rewards" / "cancelled").glob("*.safetensors"))


def test_the_recipes_model_folders_and_files_are_picked_by_name(nodes, comfy_base):
    """docs/recipes.md's layout under models/unifl: folders listed as 'name/', their own files hidden, and a
    published model's kind, aspect and threshold α taken from its name (the files carry no metadata)."""
    from transformers import CLIPConfig, CLIPModel

    from unifl.comfyui_nodes import feedback_models, paths
    from unifl.core.diffusion.tiny import write_clip_tokenizer

    rewards, perception = comfy_base / "models" / "unifl" / "rewards", comfy_base / "models" / "unifl" / "perception"
    pickscore = rewards / "PickScore_v1"
    write_clip_tokenizer(pickscore, words=["a", "red", "cat"])
    text = dict(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1, max_position_embeddings=16)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1, image_size=32, patch_size=8), projection_dim=12)).save_pretrained(str(pickscore))
    (rewards / "ImageReward" / "bert-base-uncased").mkdir(parents=True)
    (rewards / "ImageReward" / "ImageReward.pt").write_bytes(b"")
    (rewards / "HPS_v2.1_compressed.pt").write_bytes(b"")
    (rewards / "not-a-model").mkdir()
    (rewards / "not-a-model" / "notes.pt").write_bytes(b"")
    perception.mkdir(parents=True, exist_ok=True)
    (perception / "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth").write_bytes(b"")

    choices = paths.reward_choices()
    assert {"PickScore_v1/", "ImageReward/", "HPS_v2.1_compressed.pt", "not-a-model/notes.pt"} <= set(choices)
    assert not any(c.startswith(("PickScore_v1/", "ImageReward/")) and c not in ("PickScore_v1/", "ImageReward/") for c in choices)  # a folder's parts
    assert feedback_models.resolve("reward", "ImageReward/", "auto", "auto") == ("imagereward", str(rewards / "ImageReward"), "detail")
    assert feedback_models.resolve("reward", "HPS_v2.1_compressed.pt", "auto", "auto")[::2] == ("hpsv2", "color")
    assert feedback_models.resolve("perception", "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth", "auto", "auto")[::2] == ("maskrcnn-resnet50-fpn-v2", "structure")
    with pytest.raises(ValueError, match="set 'kind' on the node"):
        feedback_models.resolve("reward", "not-a-model/notes.pt", "auto", "color")
    with pytest.raises(FileNotFoundError, match="put it there"):
        feedback_models.resolve("reward", "../perception/", "auto", "color")

    model = reward(nodes, "PickScore_v1/")  # loaded for real: a (tiny) CLIP folder in PickScore's layout
    assert (model.kind, model.aspect, model.threshold) == ("pickscore", "layout", 21.5)
    assert model.module(torch.rand(1, 3, 32, 32), ["a red cat"]).shape == (1,)


@pytest.fixture()
def memory_releases(monkeypatch):
    """Each call of core's ``release_freed_memory`` (the real one still runs) with what was alive at that moment:
    ``[(UniFL trainers alive, pocket reward models alive), …]``."""
    import gc
    import weakref

    from unifl.core import memory
    from unifl.core.training import trainer as trainer_module
    from unifl.pocket.models.rewards import AspectReward

    trainers, calls = [], []

    class Tracked(trainer_module.UniFLTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(weakref.ref(self))

    real = memory.release_freed_memory

    def release():
        gc.collect()
        calls.append((sum(ref() is not None for ref in trainers), sum(issubclass(type(o), AspectReward) for o in gc.get_objects())))
        return real()

    monkeypatch.setattr(trainer_module, "UniFLTrainer", Tracked)
    monkeypatch.setattr(memory, "release_freed_memory", release)
    return calls


def test_a_finished_or_cancelled_training_gives_the_freed_memory_back_after_dropping_the_trainer(nodes, host, comfy_base, memory_releases):
    """A ComfyUI process lives for days: once a run ends (or is cancelled) and its trainer is gone, glibc's freed heap
    goes back to the system (core.memory.release_freed_memory)."""
    train(nodes, host, lora_name="unifl/memory", steps=1)
    assert memory_releases == [(0, 0)]
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            train(nodes, host, lora_name="unifl/memory_cancelled", steps=1)
    finally:
        mm.interrupt_current_processing(False)
    assert memory_releases == [(0, 0), (0, 0)]


def test_reward_training_gives_the_freed_memory_back_after_its_models_are_gone(nodes, comfy_base, pair_folder, memory_releases):
    run(nodes["UniFLTrainRewardModel"], pairs="pairs", backbone="pocket", output_folder="memory", steps=1, learning_rate=1e-3, batch_size=2,
        val_fraction=0.3, global_model=False, seed=0, overwrite=False)
    assert memory_releases == [(0, 0)]


def test_a_run_with_more_prompts_than_the_upfront_budget_reaches_step_1_without_encoding_them_all(nodes, host, comfy_base, monkeypatch, caplog):
    """200 000 prompt lines once never reached step 1 (every prompt was encoded first): the first UPFRONT_PROMPTS are
    encoded before training, the others only when a step uses one (scaled down here: a budget of 4, 200 prompts)."""
    from unifl.comfyui_nodes import denoiser

    model, clip, vae = host
    encoded = []
    real = clip.encode_from_tokens

    def counting(tokens, **kwargs):
        encoded.append(tokens)
        return real(tokens, **kwargs)

    monkeypatch.setattr(clip, "encode_from_tokens", counting)
    monkeypatch.setattr(denoiser, "UPFRONT_PROMPTS", 4)
    prompts = "\n".join(f"a red cat number {i}" for i in range(200))
    with caplog.at_level("INFO", logger="unifl"):
        train(nodes, host, lora_name="unifl/many_prompts", prompts=prompts, steps=1)
    assert 4 <= len(encoded) < 20  # the budget, then only what one step's rollouts used
    assert any("202 distinct prompts and captions: 4 encoded before training" in r.getMessage() for r in caplog.records)
    assert (comfy_base / "models" / "loras" / "unifl" / "many_prompts.safetensors").is_file()


def test_the_pre_run_check_predicts_the_activations_of_a_full_size_sd15_from_comfyui(host, monkeypatch):
    """ComfyUI's UNet has no diffusers config: the seam says its widths from ComfyUI's unet_config, so a full-size
    SD1.5 gets its activation figure (not "not predicted") and a model of other widths (the tiny one) does not."""
    from unifl.comfyui_nodes.denoiser import ComfyDenoiser
    from unifl.core.config import load_config
    from unifl.core.training.preflight import check_before_training

    model, clip, vae = host
    config = load_config(None, ["data.images=", "regularizer.denoising_weight=0", "pefl.weight=0"], preset="sd15")
    with torch.inference_mode(False):
        seam = ComfyDenoiser(model, clip, vae, ["a red cat"])
        tiny = check_before_training(config, denoiser=seam, device="cpu", prompts_given=True).memory
        monkeypatch.setitem(model.model.model_config.unet_config, "model_channels", 320)  # SD1.5's widths, as ComfyUI detects them
        monkeypatch.setitem(model.model.model_config.unet_config, "channel_mult", [1, 2, 4, 4])
        monkeypatch.setitem(model.model.model_config.unet_config, "context_dim", 768)
        full = check_before_training(config, denoiser=seam, device="cpu", prompts_given=True).memory
    assert tiny.activations is None and "not predicted" in tiny.render()
    assert full.activations is not None and "not predicted" not in full.render()


def test_the_run_description_is_logged_as_the_run_starts_also_when_cancelled(nodes, host, comfy_base, caplog):
    """ComfyUI shows log records as they come (its root logger, INFO); a print() to its redirected stdout came out
    after "UniFL: saved …", and never for a cancelled run."""
    caplog.set_level("INFO")
    train(nodes, host, lora_name="unifl/described", steps=1)
    messages = [r.getMessage() for r in caplog.records]
    described = [i for i, m in enumerate(messages) if "samples per optimizer step and term" in m]
    saved = [i for i, m in enumerate(messages) if m.startswith("UniFL: saved")]
    assert len(described) == 1 and len(saved) == 1 and described[0] < saved[0]
    caplog.clear()
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            train(nodes, host, lora_name="unifl/described_cancelled", steps=1)
    finally:
        mm.interrupt_current_processing(False)
    assert any("samples per optimizer step and term" in r.getMessage() for r in caplog.records)
