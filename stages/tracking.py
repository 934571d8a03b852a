"""Experiment tracking for the train stage: DVCLive files that DVC plots, keyed by trainer step."""

from __future__ import annotations

from transformers import TrainerCallback


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
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
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
