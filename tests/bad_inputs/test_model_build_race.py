"""A second click never breaks the host: UniFL's checks and loads patch nothing another thread builds.

The pre-run check used to build the model on the meta device under accelerate's ``init_empty_weights``,
which patches ``nn.Module`` for the whole process: while one thread ran the check, modules that any other
thread built (the host's own model loading, a UniFL job's) landed on the meta device, and two overlapping
checks could leave the process broken for good. Each test here runs the racing work on one thread while
another builds real modules, many times over, and fails if a single parameter lands on the meta device.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from unifl.core.config import load_config
from unifl.core.diffusion.loading import empty_components, load_pipeline, shipped_config_dir
from unifl.core.feedback.loading import load_reward_model
from unifl.core.training.preflight import preflight


def _race(background, foreground, rounds: int) -> list[str]:
    """Run ``background()`` ``rounds`` times on another thread while ``foreground()`` runs here over and
    over until it is done; what ``foreground`` returns (the names of meta parameters it saw) is collected."""
    errors: list[BaseException] = []

    def loop():
        try:
            for _ in range(rounds):
                background()
        except BaseException as error:  # reported below: a failing background must fail the test
            errors.append(error)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    seen: list[str] = []
    calls = 0
    while thread.is_alive() or calls == 0:
        seen += foreground()
        calls += 1
    thread.join()
    assert not errors, f"the background thread failed: {errors[0]!r}"
    return seen


def _meta_parameters(module: nn.Module, label: str) -> list[str]:
    return [f"{label}.{name}" for name, p in module.named_parameters() if p.is_meta]


def _build_real_modules() -> list[str]:
    """What a host does on its own thread: build modules and expect real weights."""
    built = [nn.Linear(32, 32), nn.Conv2d(4, 8, 3), nn.LayerNorm(16), nn.Embedding(10, 4)]
    return [name for index, module in enumerate(built) for name in _meta_parameters(module, f"module{index}")]


def test_the_pre_run_check_on_one_thread_leaves_another_threads_modules_real(tmp_path):
    config = load_config(None, ["model.architecture=sd15"], preset="sd15")
    check = lambda: preflight(config, device="cpu", load_models=False)  # noqa: E731  builds SD1.5 on meta
    assert _race(check, _build_real_modules, rounds=10) == []


def test_two_overlapping_checks_leave_the_process_able_to_build_real_modules():
    def check() -> list[str]:
        empty_components(shipped_config_dir("sd15"))
        return []

    _race(check, check, rounds=3)
    assert _build_real_modules() == [], "after two overlapping checks, a module built here landed on the meta device"
    for part in empty_components(shipped_config_dir("sd15")).values():  # and the check itself still builds on meta
        assert all(p.is_meta for p in part.parameters())


def test_a_pipeline_load_on_one_thread_leaves_a_reward_model_loaded_on_another_real(tiny_sd15_dir):
    """diffusers' ``from_pretrained`` patches ``nn.Module`` and ``torch.nn.init`` process-wide while it builds:
    UniFL's own loads (a job's base model, a check's reward models) take one lock so they never overlap."""
    load = lambda: load_pipeline(tiny_sd15_dir)  # noqa: E731
    reward = lambda: _meta_parameters(load_reward_model("pocket-reward", "lighting"), "reward")  # noqa: E731
    assert _race(load, reward, rounds=10) == []


@pytest.mark.parametrize("architecture", ["sd15", "sdxl"])
def test_the_check_still_sizes_the_published_models_without_memory(architecture):
    parts = empty_components(shipped_config_dir(architecture))
    assert all(p.is_meta for part in parts.values() for p in part.parameters())
    assert sum(p.numel() for p in parts["unet"].parameters()) == {"sd15": 859_520_964, "sdxl": 2_567_463_684}[architecture]
    assert torch.empty(1).device.type == "cpu", "the meta device leaked out of the check"
