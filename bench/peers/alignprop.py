"""AlignProp on the pocket model through ``trl==0.23.1``'s ``AlignPropTrainer`` (Apache-2.0; removed in
trl 0.24), run from its own venv: ``python bench/peers/alignprop.py --out <run> --seed 0 --max-steps 100``
(equal steps) or ``--budget-seconds 300`` (equal wall-clock).

What our glue sets, and why (the rest is trl's own defaults):

* the LoRA of the UniFL pocket preset (rank 16, alpha 16, attention + feed-forward, peft's default init) in
  place of trl's hard-coded rank-4 attention-only one (``get_trainable_layers``), fp32;
* the four pocket aspect rewards (``pocket-reward``), summed: AlignProp's loss is ``10 − mean(reward)``;
* 20 sampling steps at CFG 3 (the pocket model's, stage 1's rollout) and truncation drawn in ``(0, 20)``:
  trl's ``(0, 50)`` assumes 50 steps;
* batch 4 and learning rate 2e-4 (the preset's; the arena passes the one its validation sweep chose), the prompts of the arena's data stream;
* no checkpoints (trl's defaults crash at ``os.makedirs(None)``), the LoRA saved by hand (trl's
  ``save_pretrained`` raises after writing); ``accelerate.PartialState()`` first (trl's warning raises without it).
"""

from __future__ import annotations

import csv
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BATCH_SIZE,
    LORA_ALPHA,
    LORA_RANK,
    LORA_TARGETS,
    POCKET_CFG,
    Budget,
    count_unet_calls,
    peer_arguments,
    pocket_model,
    save_lora,
    set_threads,
    write_result,
)

SAMPLE_STEPS = 20
DATA_STREAM = (1, 8192)
ASPECTS = ("color", "layout", "detail", "lighting")


def main(argv: list[str] | None = None) -> None:
    parser = peer_arguments(__doc__.split("\n\n")[0], "recorded; the installed trl is what runs", "unused: AlignProp reads prompts, not images", source_default="pip:trl==0.23.1")
    args = parser.parse_args(argv)
    if not (args.budget_seconds > 0 or args.max_steps > 0):
        parser.error("give --max-steps or --budget-seconds")
    set_threads(args.threads)
    budget = Budget(args.budget_seconds, args.max_steps)
    counter = count_unet_calls()

    import accelerate
    import torch
    import trl
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from trl import (
        AlignPropConfig,
        AlignPropTrainer,
        DefaultDDPOStableDiffusionPipeline,
    )
    from unifl.core.feedback.loading import load_reward_model
    from unifl.pocket.arena.counting import count_feedback_models
    from unifl.pocket.plugin import register
    from unifl.pocket.world.world import sample_prompts

    accelerate.PartialState()
    register()

    class PocketLoRAPipeline(DefaultDDPOStableDiffusionPipeline):  # --lora unifl: the preset's LoRA in place of trl's
        def get_trainable_layers(self):
            torch.manual_seed(args.seed)  # peft draws lora_A from the global generator
            self.sd_pipeline.unet.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, init_lora_weights=True, target_modules=list(LORA_TARGETS)))
            for param in self.sd_pipeline.unet.parameters():
                if param.requires_grad:
                    param.data = param.to(torch.float32)
            return self.sd_pipeline.unet

    rewards = [load_reward_model("pocket-reward", aspect) for aspect in ASPECTS]
    count_feedback_models(rewards, counter)
    prompts = sample_prompts(*reversed(DATA_STREAM))
    draw = random.Random(args.seed)

    last = {"reward": float("nan")}

    def reward_function(images, batch_prompts, metadata):
        total = sum(model(images.clamp(0, 1), list(batch_prompts)) for model in rewards)
        last["reward"] = float(total.detach().mean())
        return total, {}

    config = AlignPropConfig(
        num_epochs=1, save_freq=10**9, seed=args.seed, log_with=None, mixed_precision="no",
        project_kwargs={"project_dir": str(args.out / "trl"), "automatic_checkpoint_naming": True},
        sample_num_steps=SAMPLE_STEPS, sample_guidance_scale=POCKET_CFG,
        train_batch_size=BATCH_SIZE, train_learning_rate=args.learning_rate,
        truncated_backprop_rand=True, truncated_rand_backprop_minmax=(0, SAMPLE_STEPS),
    )
    torch.manual_seed(args.seed)
    pipeline = (PocketLoRAPipeline if args.lora == "unifl" else DefaultDDPOStableDiffusionPipeline)(str(pocket_model()), use_lora=True)
    trainer = AlignPropTrainer(config, reward_function, lambda: (draw.choice(prompts), {}), pipeline)
    trainer.sd_pipeline.set_progress_bar_config(disable=True)

    log_path = args.out / "logs.csv"
    with log_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "reward_sum", "seconds"])
        step = 0
        while not budget.spent(step):
            before = time.perf_counter()
            step = trainer.step(step, step)  # one optimizer step; AlignProp's loss is 10 − mean(reward)
            writer.writerow([step, f"{10 - last['reward']:.5g}", f"{last['reward']:.5g}", f"{time.perf_counter() - budget.started:.2f}"])
            handle.flush()
            print(f"step {step}: {time.perf_counter() - before:.2f} s", flush=True)

    lora = save_lora(get_peft_model_state_dict(trainer.sd_pipeline.unet), args.out, scale=1.0)  # alpha = rank in both (trl's: 4 and 4)
    write_result(
        args.out, method="alignprop", lora=lora, seconds=round(time.perf_counter() - budget.started, 1), steps=budget.steps,
        batch_size=BATCH_SIZE, images_seen=budget.steps * BATCH_SIZE, unet_evaluations=counter["unet"], feedback_evaluations=counter["feedback"], seed=args.seed,
        budget_seconds=args.budget_seconds, learning_rate=args.learning_rate, lora_config=args.lora, version=f"trl {trl.__version__} (pip), AlignPropTrainer",
        patches=[*(["LoRA of the pocket preset instead of trl's rank-4 attention-only one (subclassed get_trainable_layers)"] if args.lora == "unifl" else []),
                 "truncation range (0, 20) for the 20-step rollout (trl: (0, 50))", "accelerate.PartialState() before the pipeline",
                 "checkpointing off, LoRA saved with peft's state dict (trl's save_pretrained raises)"],
    )


if __name__ == "__main__":
    main()
