"""Bad inputs through the ComfyUI nodes' code (``tests/comfyui_stub`` stands in for ComfyUI's own modules).

``extra_settings`` and a shared workflow's string inputs are text from strangers: paths stay inside
ComfyUI's folders, ``kind = "module"`` needs ``UNIFL_ALLOW_MODULE_KINDS=1``, nothing outside
``output/unifl_runs`` is written or deleted. Each refusal is one line and leaves every file as it was.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from bad_input_checks import assert_one_line, assert_untouched, captioned_folder, kohya_lora, snapshot

STUB = Path(__file__).resolve().parents[1] / "comfyui_stub"
if str(STUB) not in sys.path:
    sys.path.insert(0, str(STUB))

import folder_paths  # noqa: E402
import tiny_host  # noqa: E402

FAST = "\n".join([
    "pefl.inference_steps=4", "pefl.noise_level=2", "pefl.grad_levels=[0, 1]", "aesthetic.inference_steps=4", "aesthetic.grad_levels=[0, 1]",
    "adversarial.inference_steps=2", "adversarial.grad_levels=[0, 1]", "logging.checkpoint_every=1", "logging.validate_every=0",
])


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    """A ComfyUI base folder with captioned images in input/data, and a folder outside it with a LoRA, images and a prompt file."""
    base = tmp_path_factory.mktemp("comfy-base")
    outside = tmp_path_factory.mktemp("outside")
    folder_paths.set_base(str(base))
    from unifl.comfyui_nodes import paths

    paths.register_model_folders()
    captioned_folder(base / "input" / "data")
    captioned_folder(outside / "images")
    (outside / "prompts.txt").write_text("a secret prompt\n")
    kohya_lora(outside / "elsewhere.safetensors")
    (base / "models" / "loras").mkdir(parents=True)
    kohya_lora(base / "models" / "loras" / "nan.safetensors", float("nan"))
    kohya_lora(base / "models" / "loras" / "truncated.safetensors").write_bytes((base / "models" / "loras" / "nan.safetensors").read_bytes()[:150])
    return base, outside


@pytest.fixture(scope="module")
def host(comfy):
    from unifl.core.diffusion.tiny import build_tiny_pipeline

    with torch.inference_mode():
        return tiny_host.comfy_objects(build_tiny_pipeline("sd15", seed=0))


@pytest.fixture(scope="module")
def nodes():
    from unifl.comfyui_nodes import NODES

    return {n.define_schema().node_id: n for n in NODES}


def run(node, **inputs):
    with torch.inference_mode():
        return node.run(**inputs)


def train(nodes, host, **overrides):
    model, clip, vae = host
    reward = run(nodes["UniFLLoadRewardModel"], model_name="builtin/colorfulness", aspect="auto", weight=1.0, use_model_threshold=True, threshold=0.0, kind="auto")[0]
    inputs = dict(model=model, clip=clip, vae=vae, stage="1", lora_name="unifl/bad", prompts="a red cat", image_folder="data", steps=1, learning_rate=1e-3,
                  rank=4, alpha=4.0, lora_targets="attention", resolution=32, batch_size=1, gradient_accumulation=1, seed=0, mixed_precision="no",
                  gradient_checkpointing=True, init_lora="(none)", overwrite=False, extra_settings=FAST, reward_1=reward)
    return run(nodes["UniFLTrainLoRA"], **(inputs | overrides))


def refused(comfy, action, error, pattern):
    """``action()`` raises ``error`` in one line matching ``pattern``; ComfyUI's folders (and the outside one) are as they were."""
    base, outside = comfy
    before = snapshot(base, outside)
    runs = set((base / "output" / "unifl_runs").glob("*"))
    with pytest.raises(error) as caught:
        action()
    assert_one_line(str(caught.value), pattern)
    assert_untouched(before)
    assert set((base / "output" / "unifl_runs").glob("*")) == runs, "a refused run leaves no run folder"
    return str(caught.value)


def _extra(comfy, line: str) -> str:
    base, outside = comfy
    return FAST + "\n" + line.format(base=base.as_posix(), outside=outside.as_posix())


EXTRA_CASES = [
    ("logging.output_dir='{outside}/run'", r"logging.output_dir = '.*/run': ComfyUI keeps run folders inside .*output/unifl_runs; remove that setting"),
    ("logging.output_dir='{base}/output'", r"logging.output_dir = '.*/output': ComfyUI keeps run folders inside .*output/unifl_runs"),
    ("logging.output_dir='{base}/output/unifl_runs/../../custom_nodes'", r"logging.output_dir = .*custom_nodes': ComfyUI keeps run folders inside"),
    ("data.images='{outside}/images'", r"data.images = '.*/images' is outside the folders ComfyUI may read \(.*input"),
    ("data.prompts='{outside}/prompts.txt'", r"data.prompts = '.*/prompts.txt' is outside the folders ComfyUI may read"),
    ("data.prompts='{base}/input/../../../etc/passwd'", r"data.prompts = '.*etc/passwd' is outside the folders ComfyUI may read"),
    ("data.prompts='~/.bashrc'", r"data.prompts = '~/.bashrc' is outside the folders ComfyUI may read"),
    ("lora.init_from='{outside}/elsewhere.safetensors'", r"lora.init_from = '.*elsewhere.safetensors' is outside the folders ComfyUI may read"),
    ("model.path='{outside}/model.safetensors'", r"model.path = '.*model.safetensors' is outside the folders ComfyUI may read"),
    ('rewards=[{{aspect = "detail", kind = "module", path = "os:abort"}}]',
     r"rewards\[0\].kind = 'module' imports and runs Python code \('os:abort'\), which ComfyUI does not allow; .*UNIFL_ALLOW_MODULE_KINDS=1"),
    ('perception=[{{aspect = "style", kind = "module", path = "os:abort"}}]', r"perception\[0\].kind = 'module' imports and runs Python code"),
    ('perception=[{{aspect = "style", kind = "torchscript", path = "{outside}/model.pt"}}]', r"perception\[0\].path = '.*model.pt' is outside the folders ComfyUI may read"),
    ('rewards=[{{aspect = "color", kind = "laion-aesthetic", path = "clip={base}/models/loras;head={outside}/head.pth"}}]',
     r"rewards\[0\].path = '.*outside.*/head.pth' is outside the folders ComfyUI may read"),
    ("logging.output_name='../../../escaped'", r"logging.output_name = '../../../escaped': a file name without folders"),
    ("optim.learning_rate=0", r"UniFL Train LoRA: optim.learning_rate = 0.0: must be a finite number above 0 \(node inputs and extra_settings\)"),
    ("logging.checkpoint_every=0", r"logging.checkpoint_every = 0: must be a whole number of at least 1"),
    ("data.resolution=36", r"data.resolution = 36: use a multiple of 8"),
    ("optim.learning_rate", r"--set 'optim.learning_rate': use KEY=VALUE"),
]


@pytest.mark.parametrize(("line", "pattern"), EXTRA_CASES, ids=[c[0][:40] for c in EXTRA_CASES])
def test_extra_settings_cannot_leave_comfyuis_folders_or_run_code(comfy, nodes, host, line, pattern):
    refused(comfy, lambda: train(nodes, host, extra_settings=_extra(comfy, line)), ValueError, pattern)


@pytest.mark.parametrize(("folder", "pattern"), [
    ("{outside}/images", r"'.*/images' is outside ComfyUI's folders; put it inside the input directory"),
    ("../../../../../../etc", r"'../../../../../../etc' is outside ComfyUI's folders"),
    ("~", r"'~' is outside ComfyUI's folders"),
])
def test_the_image_folder_input_stays_inside_comfyuis_folders(comfy, nodes, host, folder, pattern):
    base, outside = comfy
    refused(comfy, lambda: train(nodes, host, image_folder=folder.format(outside=outside.as_posix())), ValueError, pattern)


def test_the_reward_training_node_reads_pairs_only_inside_comfyui(comfy, nodes):
    base, outside = comfy
    (outside / "pairs.jsonl").write_text("{}\n")
    refused(comfy, lambda: run(nodes["UniFLTrainRewardModel"], pairs=str(outside / "pairs.jsonl"), backbone="pocket", output_folder="x", steps=1,
                               learning_rate=1e-3, batch_size=2, val_fraction=0.5, global_model=False, seed=0, overwrite=False),
            ValueError, r"pairs.jsonl' is outside ComfyUI's folders")


@pytest.mark.parametrize("role", ["Reward", "Perception"])
def test_a_loader_node_refuses_kind_module(comfy, nodes, role):
    inputs = dict(model_name="builtin/colorfulness" if role == "Reward" else "builtin/random-features", aspect="color" if role == "Reward" else "style",
                  weight=1.0, kind="module")
    if role == "Reward":
        inputs |= dict(use_model_threshold=True, threshold=0.0)
    refused(comfy, lambda: run(nodes[f"UniFLLoad{role}Model"], **inputs), ValueError,
            r"kind 'module' imports and runs Python code; the owner of this ComfyUI can allow it by starting ComfyUI with UNIFL_ALLOW_MODULE_KINDS=1")


@pytest.mark.parametrize(("name", "pattern"), [
    ("nan.safetensors", r"nan.safetensors: 1 of 3 tensors hold NaN or infinite values"),
    ("truncated.safetensors", r"truncated.safetensors: not a readable .safetensors file"),
])
def test_the_lora_loader_node_refuses_a_broken_lora(comfy, nodes, host, name, pattern):
    refused(comfy, lambda: run(nodes["UniFLLoadLoRA"], model=host[0], lora_name=name, strength=1.0), ValueError, pattern)


@pytest.mark.slow
def test_training_from_a_nan_lora_is_refused_naming_it(comfy, nodes, host):
    refused(comfy, lambda: train(nodes, host, init_lora="nan.safetensors"), ValueError, r"nan.safetensors: 1 of 3 tensors hold NaN or infinite values")


def test_the_owner_can_allow_module_kinds(comfy, monkeypatch):
    from unifl.comfyui_nodes import paths
    from unifl.comfyui_nodes.train_jobs import confine_to_comfyui
    from unifl.core.config import load_config

    config = load_config(None, [f"logging.output_dir={paths.runs_folder() / 'r'}", 'rewards=[{aspect = "detail", kind = "module", path = "os:abort"}]'], preset="tiny")
    with pytest.raises(ValueError, match="UNIFL_ALLOW_MODULE_KINDS=1"):
        confine_to_comfyui(config)
    monkeypatch.setenv("UNIFL_ALLOW_MODULE_KINDS", "1")
    assert confine_to_comfyui(config) is config  # allowed; nothing was imported or called here


TINY_Q = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"  # a layer of the tiny SD1.5 UNet
ELSEWHERE = "lora_unet_down_blocks_3_attentions_1_transformer_blocks_0_attn1_to_q"  # no such layer in it


def unifl_lora(path: Path, names: list[str], architecture: str, step_counts: str = "2") -> Path:
    """A UniFL LoRA (sampler contract, rank 4) on ``names`` of a model of ``architecture`` (SD1.5-shaped: ``sd_v1``)."""
    from safetensors.torch import save_file

    tensors = {}
    for name in names:
        tensors |= {f"{name}.lora_down.weight": torch.full((4, 64), 0.01), f"{name}.lora_up.weight": torch.full((64, 4), 0.01), f"{name}.alpha": torch.tensor(4.0)}
    save_file(tensors, str(path), metadata={"ss_network_dim": "4", "ss_network_alpha": "4.0", "unifl.architecture": architecture, "ss_base_model_version": "sd_v1",
                                             "unifl.sampler.steps": "2", "unifl.sampler.scheduler": "ddim", "unifl.sampler.timestep_spacing": "trailing",
                                             "unifl.sampler.cfg": "1.0", "unifl.sampler.step_counts": step_counts})
    return path


def test_the_lora_loader_node_refuses_a_lora_made_for_another_model(comfy, nodes, host):
    """Its file metadata passes (an SD1.5-shaped model's LoRA says sd_v1), but none of its keys is a layer of this
    MODEL: ComfyUI would apply nothing and the user would sample the unchanged base with the LoRA's settings."""
    from comfy.sd import NOT_LOADED

    base, _ = comfy
    unifl_lora(base / "models" / "loras" / "for-pocket.safetensors", [ELSEWHERE], "pocket")
    NOT_LOADED.clear()
    refused(comfy, lambda: run(nodes["UniFLLoadLoRA"], model=host[0], lora_name="for-pocket.safetensors", strength=1.0), ValueError,
            r"for-pocket.safetensors: none of its 1 LoRA modules matches a layer of this MODEL's UNet .* The LoRA was made for 'pocket'")
    assert NOT_LOADED == []  # refused before ComfyUI's loader saw it


def test_the_lora_loader_node_warns_when_only_part_of_a_lora_matches(comfy, nodes, host, caplog):
    base, _ = comfy
    unifl_lora(base / "models" / "loras" / "half.safetensors", [TINY_Q, ELSEWHERE], "pocket")
    with caplog.at_level("WARNING", logger="unifl"):
        model, *_, info = run(nodes["UniFLLoadLoRA"], model=host[0], lora_name="half.safetensors", strength=1.0).args
    assert len(model.patches) == 1  # the matching module is applied
    assert "WARNING:" in info and "1 of 2 LoRA modules have no matching layer" in info and "'pocket'" in info
    assert any("1 of 2 LoRA modules have no matching layer" in r.getMessage() for r in caplog.records)


def test_the_lora_loader_node_follows_the_users_step_count_within_the_trained_set(comfy, nodes, host):
    base, _ = comfy
    unifl_lora(base / "models" / "loras" / "general.safetensors", [TINY_Q], "sd15", step_counts="1,2,4")
    load = nodes["UniFLLoadLoRA"]
    *_, sigmas, _, steps, info = run(load, model=host[0], lora_name="general.safetensors", strength=1.0).args
    assert steps == 2 and len(sigmas) == 3 and "WARNING" not in info  # no steps input: the LoRA's own count
    *_, sigmas, _, steps, info = run(load, model=host[0], lora_name="general.safetensors", strength=1.0, steps=4).args
    assert steps == 4 and len(sigmas) == 5 and "WARNING" not in info and "trained for 1, 2, 4" in info
    *_, sigmas, _, steps, info = run(load, model=host[0], lora_name="general.safetensors", strength=1.0, steps=3).args
    assert steps == 2 and len(sigmas) == 3  # the nearest trained count (ties go to the smaller)
    assert "WARNING: general.safetensors: this LoRA was trained to sample at 1, 2, 4 steps, not 3: sampling at 2" in info


@pytest.mark.parametrize(("node", "inputs", "pattern"), [
    ("UniFLLoadRewardModel", {"model_name": "PickScore_v1/"}, r"^'PickScore_v1/' is not in \[.*rewards'\]; put it there \(docs/recipes.md says where"),
    ("UniFLLoadRewardModel", {"model_name": "builtin/nonsense"}, r"^'builtin/nonsense' is not a model this pack ships; pick one of \["),
    ("UniFLLoadPerceptionModel", {"model_name": "vgg16-397923af.pth"}, r"^'vgg16-397923af.pth' is not in \[.*perception'\]"),
    ("UniFLLoadLoRA", {"lora_name": "unifl/recipe_stage1.safetensors"}, r"^LoRA 'unifl/recipe_stage1.safetensors' is not in \[.*loras'\]; put it there"),
    ("UniFLTrainLoRA", {"image_folder": "unifl_coco", "init_lora": "unifl/none.safetensors"},
     r"^image_folder: .*input/unifl_coco does not exist; .*; init_lora: LoRA 'unifl/none.safetensors' is not in"),
    ("UniFLTrainLoRA", {"image_folder": "{outside}/images", "init_lora": "(none)"}, r"^image_folder: '.*/images' is outside ComfyUI's folders"),
    ("UniFLTrainRewardModel", {"pairs": "no_pairs"}, r"^.*input/no_pairs does not exist"),
])
def test_a_queued_prompt_names_a_missing_file_before_anything_loads(comfy, nodes, node, inputs, pattern):
    """ComfyUI calls validate_inputs when the prompt is queued; a string is the node's refusal (every node's at once)."""
    base, outside = comfy
    values = {k: v.format(outside=outside.as_posix()) for k, v in inputs.items()}
    before = snapshot(base, outside)
    message = nodes[node].validate_inputs(**values)
    assert isinstance(message, str)
    assert_one_line(message, pattern)
    assert_untouched(before)


def test_a_queued_prompt_with_its_files_in_place_passes_validation(comfy, nodes):
    assert nodes["UniFLLoadRewardModel"].validate_inputs(model_name="builtin/colorfulness") is True
    assert nodes["UniFLLoadLoRA"].validate_inputs(lora_name="nan.safetensors") is True  # there: its contents are checked when it loads
    assert nodes["UniFLTrainLoRA"].validate_inputs(image_folder="data", init_lora="(none)") is True
    assert nodes["UniFLTrainLoRA"].validate_inputs(image_folder="pocket", init_lora="(none)") is True


def test_200k_prompt_lines_reach_step_1(comfy, nodes, host):
    """Once every prompt was encoded before step 1 (12 minutes without reaching it); now only the first
    UPFRONT_PROMPTS are, and the run trains and saves."""
    from comfy.utils import PROGRESS

    base, _ = comfy
    progress_before = len(PROGRESS)
    train(nodes, host, lora_name="unifl/many", prompts="\n".join(f"a red cat {i}" for i in range(200_000)))
    assert [p[0] for p in PROGRESS[progress_before:] if p[2] is None] == [1]
    assert (base / "models" / "loras" / "unifl" / "many.safetensors").is_file()
