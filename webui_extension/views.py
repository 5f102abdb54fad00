"""What one poll of the page shows for a job snapshot: status, loss curve, previews, result."""

from __future__ import annotations

import html
import math

from PIL import Image

from ..core.lora.kohya import SamplerContract, read_lora_metadata
from .jobs import Snapshot

#: Logged values that are not losses or rewards (they have their own scales).
NOT_PLOTTED = ("lr", "grad_norm", "seconds")
#: Logged scores (higher is better), drawn apart from the losses.
SCORE_PREFIXES = ("reward_", "d_fake_score")
_plot_cache: dict[tuple[str, int], Image.Image] = {}


def status_html(snapshot: Snapshot | None) -> str:
    """Status line with a progress bar; ``data-unifl-state`` tells the page's poller whether to go on."""
    if snapshot is None:
        return '<div class="unifl-status" data-unifl-state="idle">Nothing to show yet: ↻ Status shows the current or last run.</div>'
    fraction = snapshot.step / snapshot.total if snapshot.total else 0.0
    eta = ""
    if snapshot.active and snapshot.seconds_per_step:
        eta = f" · about {_duration(snapshot.seconds_per_step * (snapshot.total - snapshot.step))} left"
    return (
        f'<div class="unifl-status" data-unifl-state="{snapshot.state}">'
        f"<b>{html.escape(snapshot.name)}</b>: {html.escape(snapshot.state)} · step {snapshot.step}/{snapshot.total}{eta}"
        f'<div style="background:#8884;height:6px;border-radius:3px;margin:4px 0">'
        f'<div style="background:#f97316;height:6px;border-radius:3px;width:{100 * fraction:.1f}%"></div></div>'
        f"{html.escape(snapshot.message)}</div>"
    )


def error_html(message: str) -> str:
    """A refused start (bad form value, busy GPU): shown in place of the status, polling stops. A refusal
    naming several problems has a line each (HTML would run them together)."""
    lines = "<br>".join(html.escape(line) for line in message.strip().splitlines())
    return f'<div class="unifl-status" data-unifl-state="error" style="color:#dc2626">{lines}</div>'


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def loss_plot(snapshot: Snapshot | None) -> Image.Image | None:
    """The logged losses and rewards against the step (re-drawn only when a step was added)."""
    if snapshot is None or not snapshot.history:
        return None
    key = (snapshot.task_id, len(snapshot.history))
    if key not in _plot_cache:
        _plot_cache.clear()
        _plot_cache[key] = _draw(snapshot.history, f"UniFL {snapshot.name}")
    return _plot_cache[key]


def _draw(history: list[tuple[int, dict]], title: str) -> Image.Image:
    # The object API, not pyplot: polls run on gradio's worker threads and pyplot's state is global.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8, 3.2), dpi=100)
    canvas = FigureCanvasAgg(figure)
    steps = [step for step, _ in history]
    names = sorted({name for _, logs in history for name in logs if name not in NOT_PLOTTED})
    panels = {"losses": [n for n in names if not n.startswith(SCORE_PREFIXES)], "rewards (higher is better)": [n for n in names if n.startswith(SCORE_PREFIXES)]}
    for i, (panel, panel_names) in enumerate(panels.items()):
        axes = figure.add_subplot(1, 2, i + 1)
        for name in panel_names:
            axes.plot(steps, [logs.get(name, math.nan) for _, logs in history], label=name, marker="." if len(steps) < 30 else None)
        axes.set_xlabel("step")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(f"{title}: {panel}", fontsize=9)
        if panel_names:
            axes.legend(fontsize=6)
    figure.tight_layout()
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def gallery_items(snapshot: Snapshot | None) -> list[tuple[Image.Image, str]]:
    return list(snapshot.previews) if snapshot is not None else []


def result_text(snapshot: Snapshot | None) -> str:
    """What the run learns from, where the LoRA went and how to sample with it (the sampler it was trained for)."""
    if snapshot is None:
        return ""
    lines = [snapshot.feedback] if snapshot.feedback else []
    if snapshot.lora_path is not None:
        lines += [f"LoRA: {snapshot.lora_path}", f"Prompt with <lora:{snapshot.name}:1>."]
        contract = SamplerContract.from_metadata(read_lora_metadata(snapshot.lora_path))
        if contract is not None:
            lines.append(sampler_advice(contract))
    lines.append(f"Run folder (checkpoints, logs.csv, samples): {snapshot.run_dir}")
    return "\n".join(lines)


def sampler_advice(contract: SamplerContract) -> str:
    """How to sample with a LoRA of ``contract``: its default step count and every count it was trained for."""
    trained = "" if len(contract.step_counts) <= 1 else f" (trained for {', '.join(map(str, contract.step_counts))} steps: any of them works)"
    return f"Sample with {contract.steps} steps{trained}, {contract.scheduler.upper()} sampler ({contract.timestep_spacing} timestep spacing), CFG {contract.cfg:g}."
