"""bench/floor.py: the least time a finished run's model compute can take here, counted from the
run's own files, against what the run recorded. Its run on a finished tiny run is in
tests/test_pipeline.py, which shares that run (built once)."""

import subprocess
import sys
from types import SimpleNamespace

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import floor  # noqa: E402

# One layer, hidden 8 (2 heads of 4, 1 key/value head), MLP 16, vocabulary 10.
CONFIG = SimpleNamespace(hidden_size=8, num_attention_heads=2, num_key_value_heads=1, head_dim=4, num_hidden_layers=1,
                         intermediate_size=16, vocab_size=10)
# Per token, by hand: q 8x8, k and v 8x4 each, o 8x8, gate and up 8x16 each, down 16x8: 576
# multiply-adds; the head 8x10: 80. Attention: scores and mixing, 2 heads x 4 dims x 2 x 2 a position.
BODY, HEAD, ATTENTION = 2 * 576, 2 * 80, 32


def test_a_tokens_flops_are_its_layers_products_and_attention_to_its_context():
    assert floor.head_flops(CONFIG) == HEAD
    assert floor.body_flops(CONFIG, 0) == BODY
    assert floor.body_flops(CONFIG, 10) == BODY + 10 * ATTENTION
    # Two sequences of 4 and 2 tokens, the head at 3 positions.
    assert floor.forward_flops(CONFIG, [4, 2], 3) == 4 * (BODY + 2 * ATTENTION) + 2 * (BODY + ATTENTION) + 3 * HEAD


def test_training_counts_the_head_at_completion_positions_and_each_method_its_backward():
    train = [{"input_ids": [0] * 4, "assistant_masks": [0, 0, 1, 1]}, {"input_ids": [0] * 2, "assistant_masks": [0, 0]}]
    validation = [{"input_ids": [0] * 2, "assistant_masks": [1, 1]}]
    forward = floor.forward_flops(CONFIG, [4, 2], 2)  # a record with no completion gets no head
    once = floor.forward_flops(CONFIG, [2], 2)
    lora = floor.train_flops(CONFIG, train, validation, 2.0, "lora", checkpointing=False)
    assert lora == {"train": 2 * 2 * forward, "validation": 2 * once}  # forward and backward, 2 epochs; 2 passes
    assert floor.train_flops(CONFIG, train, validation, 2.0, "full", False)["train"] == 2 * 3 * forward
    assert floor.train_flops(CONFIG, train, validation, 2.0, "qlora", True)["train"] == 2 * 3 * forward
    # Stopped early, half-way through the third epoch: three validation passes.
    assert floor.train_flops(CONFIG, train, validation, 2.5, "lora", False)["validation"] == 3 * once


def test_an_evaluation_reads_the_shared_tokens_once():
    prompts = [[1, 2, 3, 4, 5], [1, 2, 3, 6], [1, 2, 3, 7, 8, 9]]
    shared = floor.evaluation_flops(CONFIG, prompts, shared=3, generated=0)
    assert shared == floor.forward_flops(CONFIG, [3], 0) + sum(
        n * floor.body_flops(CONFIG, 3 + n / 2) for n in (2, 1, 3)) + 3 * HEAD
    unshared = floor.evaluation_flops(CONFIG, prompts, shared=0, generated=0)
    assert unshared == floor.forward_flops(CONFIG, [5, 4, 6], 3)
    assert unshared - shared > 2 * 3 * BODY  # the two copies of the 3 shared tokens not read again
    # Six generated tokens, each through the whole model at the prompt's mean length and half a reply.
    assert floor.evaluation_flops(CONFIG, prompts, 3, 6) - shared == 6 * (floor.body_flops(CONFIG, 5 + 1) + HEAD)


def test_checkpointing_left_out_of_params_is_counted_as_trl_runs_it():
    assert floor.checkpointing({"gradient_checkpointing": False}) is False
    assert floor.checkpointing({"gradient_checkpointing": True}) is True
    # Left out, SFTTrainer recomputes activations as its own default says: on, in the pinned trl.
    assert floor.checkpointing({}) is True


def test_each_stage_is_held_to_the_limit_of_the_precision_it_ran_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the stages' params, as floor.py reads them in the run's folder
    (tmp_path / "params.yaml").write_text("evaluate: {dtype: bfloat16}\nforgetting: {dtype: float16}\n")
    params = {"train": {"cpu_bf16": True}}
    native = floor.stage_dtypes(params, native=lambda dtype: "avx512_bf16" if dtype == "bfloat16" else None)
    # No float16 instructions: the forgetting stage fell back to float32, as it says in one line.
    assert native == {floor.TRAIN: "bfloat16", "baseline": "bfloat16", "finetuned": "bfloat16", "fewshot": "bfloat16",
                      floor.FORGETTING: "float32"}
    emulated = floor.stage_dtypes(params, native=lambda dtype: None)
    assert set(emulated.values()) == {"float32"}  # a CPU without them runs every stage in float32

    flops = {floor.TRAIN: 4e12, "baseline": 1e12}
    limits = {"float32": 100.0, "bfloat16": 200.0}
    result = floor.report(flops, {floor.TRAIN: 40.0, "baseline": None}, limits, 50.0,
                          {floor.TRAIN: "bfloat16", "baseline": "float32"})
    assert result["stages"][floor.TRAIN] == {"tflop": 4.0, "dtype": "bfloat16", "floor_seconds": 20.0,
                                             "recorded_seconds": 40.0, "share_of_limit": 0.5}
    assert result["stages"]["baseline"]["floor_seconds"] == 10.0
    assert result["floor_seconds"] == {"float32": 50.0, "bfloat16": 25.0, "as_run": 30.0}
    assert result["run_share_of_limit"] == 0.6  # the run against its floor in the precisions it chose


def test_a_folder_without_a_finished_run_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("train: {}\n")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "floor.py"), "--repo", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "has no finished run" in done.stderr and "metrics/train.json" in done.stderr and "make repro" in done.stderr
