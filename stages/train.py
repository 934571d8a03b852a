"""train: supervised fine-tuning with trl's SFTTrainer (full, LoRA, or QLoRA with peft).

    python -m sft.launch -m stages.train \
        --model models/base --data data/prepared --out models/train --metrics metrics/train.json

Reads `train:` of params.yaml (sft/training.py: the project's keys, and SFTConfig arguments under
their trl/transformers names). Loss is on the completion only; evaluation on the validation
split and a checkpoint every epoch by default. Checkpoints grow in <out>.partial, which a killed
run leaves for the next run to resume from (sft/resume.py); the finished run is renamed to <out>.
What the run decided (the method, the adapter, the trainer settings as applied, the global batch)
goes to models/trained.json (sft/trained.py), which select, merge and the card read.
`sft.launch` runs it through `accelerate launch` with the `launch:` section's settings.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from sft import device, handoff, models, resume, tracking, training, volatile
from sft.consolidate import consolidated_checkpoints
from sft.files import write_json
from sft.params import read_section, run


def main() -> None:
    ap = argparse.ArgumentParser(description="Fine-tune the base model on the prepared data.")
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="models/train")
    ap.add_argument("--scratch", default=None, help="where the run writes checkpoints until it ends "
                    "(default: <out>.partial); kept after a kill, so the next run resumes from it")
    ap.add_argument("--metrics", default="metrics/train.json")
    ap.add_argument("--decided", default="models/trained.json", help="what the run decided (the method, the "
                    "adapter, the trainer settings as applied, the global batch), read by the stages after it")
    ap.add_argument("--speed", default="metrics/speed/train.json", help="wall time, tokens/s, peak memory")
    ap.add_argument("--live", default="metrics/train", help="DVCLive folder (plots of loss per step)")
    args = ap.parse_args()
    p, sft = training.load_params()
    made = handoff.settings(args.data)  # what prepare tokenized with: its max_length is trl's, train_on in the digest
    sft["max_length"] = made["max_length"]
    device.use_cpu_cores()

    has_cuda = device.has_cuda()
    sft["report_to"] = tracking.report_to(sft.get("report_to"))
    out = Path(args.scratch or f"{args.out}.partial")
    applied = training.applied_settings(p, sft, has_cuda)
    config = training.trainer_config(p, applied, str(out))
    decided = training.decided(p, read_section("train"), applied, config, has_cuda, made)  # before the trainer takes it
    print(f"[train] global batch {training.global_batch(config)} = {config.per_device_train_batch_size} per device x "
          f"{config.world_size} processes x {config.gradient_accumulation_steps} accumulation steps", flush=True)
    trained_by = training.trained_by(p, sft, made["train_on"])
    # The records, the tokenizer and the settings the tokens were made from decide them, so they
    # decide whether an interrupted run may be resumed.
    digest = resume.fingerprint(trained_by, [Path(args.data) / "train.jsonl", Path(args.data) / "validation.jsonl",
                                             Path(args.model)])
    # Only the main process clears or creates the folder and decides; every rank follows its plan.
    checkpoint = resume.plan(out, digest, p.keep_stale, launched(config)) if config.process_index == 0 else None
    if config.world_size > 1:
        from accelerate.utils import broadcast_object_list

        checkpoint = broadcast_object_list([checkpoint])[0]
    if "wandb" in config.report_to and config.process_index == 0:
        tracking.continue_wandb_run(out)
    trainer, tokenizer = training.make_trainer(p, config, args.model, Path(args.data), has_cuda,
                                               callbacks=tracking.callbacks(args.live, config.process_index == 0))
    started = time.time()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        trainer.save_state()
        tokenizer.save_pretrained(out)
        consolidated_checkpoints(out, trainer.model, tokenizer)  # a sharded FSDP save, read by select and merge
        figures, speed = volatile.split(training.run_figures(trainer, started, trainer.train_dataset))
        resume.mark_complete(out, figures)
        # A random id, needed only to resume; a finished run is never resumed, and the output stays hashable.
        (out / tracking.WANDB_RUN_FILE).unlink(missing_ok=True)
        volatile.scrub(out)
        resume.publish(out, Path(args.out))
        write_json(args.decided, decided)
        write_json(args.metrics, figures)
        write_json(args.speed, speed)
        print(f"[train] wrote {args.out}, {args.decided} and {args.metrics}: {figures}; {speed}", flush=True)


def launched(config) -> dict:
    """How this run is launched and the digest of the code that trains it: resume only the same."""
    from accelerate import PartialState

    code = [Path(__file__), *(Path(module.__file__) for module in (training, handoff, models, resume))]
    return {"world_size": config.world_size, "distributed_type": str(PartialState().distributed_type),
            "fsdp": os.environ.get("ACCELERATE_USE_FSDP", "false"),
            "deepspeed": os.environ.get("ACCELERATE_USE_DEEPSPEED", "false"),
            "code": resume.code_digest(code)}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run(main)
