"""Experiment tracking for the train stage: DVCLive files that DVC plots, keyed by trainer step;
Weights & Biases when asked for; a progress bar with tokens per second.

W&B is optional and never needs a key in a file: it is on when `train.report_to` names `wandb`
or when `WANDB_PROJECT` is set in the environment; `WANDB_MODE=offline` runs with no account,
and `WANDB_API_KEY` (environment only) is read by wandb itself for online runs.
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from sft.params import UserError
from sft.volatile import is_volatile

WANDB_RUN_FILE = "wandb-run-id"


def report_to(configured) -> list[str]:
    """The integrations transformers should attach: W&B from params or environment, never DVCLive
    (this module attaches its own, keyed by trainer step)."""
    names = [configured] if isinstance(configured, str) else list(configured or [])
    names = [n for n in names if n not in ("none", "dvclive")]
    if "wandb" not in names and os.environ.get("WANDB_PROJECT"):
        if importlib.util.find_spec("wandb") is None:
            print("[train] WANDB_PROJECT is set but wandb is not installed (pip install -e '.[track]'); "
                  "tracking with DVCLive only", flush=True)
        else:
            names.append("wandb")
    if "wandb" in names and importlib.util.find_spec("wandb") is None:
        raise UserError("params.yaml: train.report_to names wandb, which is not installed; "
                        "run pip install -e '.[track]' or remove wandb from train.report_to")
    return names or ["none"]


def continue_wandb_run(out: Path) -> str:
    """Give the run a W&B id kept beside its checkpoints, so a resumed run continues the same W&B run
    (wandb.init reads WANDB_RUN_ID and WANDB_RESUME). A clean start gets a new id."""
    id_file = out / WANDB_RUN_FILE
    if not id_file.is_file():
        id_file.write_text(uuid.uuid4().hex[:16] + "\n")
    run_id = id_file.read_text().strip()
    os.environ["WANDB_RUN_ID"] = run_id
    os.environ["WANDB_RESUME"] = "allow"
    return run_id


def metric_name(key: str) -> str:
    """'loss' -> 'train/loss', 'eval_loss' -> 'eval/loss': one name per curve, two curves per chart."""
    return f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"


class DVCLiveSteps(TrainerCallback):
    """Log every trainer log line to DVCLive at the trainer's global step.

    transformers' DVCLiveCallback counts log calls as steps, so training and validation loss
    land on different x positions; here both use `state.global_step` and line up in
    `dvc plots show` (the bias-variance chart: training loss falling, validation loss turning up).
    """

    def __init__(self, live):
        self.live = live

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run starts with the checkpoint's history: replay it, so the curves stay whole.
        if state.is_world_process_zero:
            for entry in state.log_history:
                self.log(entry["step"], entry)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.log(state.global_step, logs)

    def log(self, step: int, logs: dict) -> None:
        self.live.step = step
        for key, value in logs.items():
            # Runtimes and rates vary by machine: they stay out of the hashed DVCLive folder.
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool) \
                    and not is_volatile(key):
                self.live.log_metric(metric_name(key), value)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.live.end()


def callbacks(live_dir: str, is_main: bool) -> list:
    """DVCLive on the main process only, so its files are written once."""
    if not is_main:
        return []
    from dvclive import Live

    return [DVCLiveSteps(Live(dir=live_dir, save_dvc_exp=False, dvcyaml=None, report=None))]


class TokenProgress(ProgressCallback):
    """transformers' progress bar (steps, elapsed, ETA) plus non-padding tokens per second."""

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.started, self.tokens_at_start = time.time(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        super().on_step_end(args, state, control, **kwargs)
        if self.training_bar is not None:
            rate = (state.num_input_tokens_seen - self.tokens_at_start) / max(time.time() - self.started, 1e-9)
            self.training_bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)


def show_tokens_per_second(trainer) -> None:
    """Swap the trainer's plain progress bar for one that also shows tokens per second."""
    if trainer.args.disable_tqdm:
        return
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(TokenProgress())
