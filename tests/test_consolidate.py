"""A sharded FSDP checkpoint becomes one that select and merge read with `from_pretrained`.

accelerate 1.15 runs FSDP only on accelerators: with ACCELERATE_USE_CPU it turns the FSDP config
into plain DDP (MULTI_CPU), so an FSDP run of the train stage cannot happen on a CPU. torch's own
FSDP2 does run on CPUs over gloo, so this test shards a model across 2 real processes, trains one
step, and saves each checkpoint exactly as accelerate's `save_fsdp_model` does for
SHARDED_STATE_DICT (`{"model": state_dict}` written by torch.distributed.checkpoint into
`checkpoint-N/pytorch_model_fsdp_0/`; only the adapter's weights when the model is a PEFT model).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# What train records of each kind of run, as trained_model reads it (models/trained.json).
FULL = {"adapter": None, "quantization": None}
LORA = {"adapter": {"r": 4}, "quantization": None}


def worker(base: str, out: str, lora: bool) -> None:
    """One of 2 processes: FSDP2 over gloo, one training step, the sharded save, and (rank 0) the
    whole trained weights to compare with."""
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM

    dist.init_process_group("gloo")
    torch.manual_seed(dist.get_rank())
    model = AutoModelForCausalLM.from_pretrained(base)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    layers = model.get_base_model().model.layers if lora else model.model.layers
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    ids = torch.randint(0, model.config.vocab_size, (2, 12))  # each rank its own batch
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()

    if lora:
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model)
    else:
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=False))
    sharded = Path(out) / "checkpoint-1" / "pytorch_model_fsdp_0"
    dcp.save({"model": state}, storage_writer=dcp.FileSystemWriter(sharded), planner=DefaultSavePlanner())
    whole = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in state.items()}
    if dist.get_rank() == 0:
        torch.save(whole, Path(out) / "whole.pt")
    dist.destroy_process_group()


def sharded_run(tmp_path: Path, tokenizer_dir: Path, lora: bool) -> tuple[Path, Path]:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = tmp_path / "base"
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(base)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(base)  # trained_model reads the base's
    train = tmp_path / "train"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", __file__,
                           str(base), str(train), str(int(lora))], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((train / "checkpoint-1" / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2  # really sharded
    return base, train


def test_a_sharded_full_fine_tune_is_consolidated_and_loads(tmp_path, tokenizer_dir):
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from sft.checkpoints import merged, trained_model
    from sft.consolidate import consolidate, sharded_checkpoints

    base, train = sharded_run(tmp_path, tokenizer_dir, lora=False)
    assert sharded_checkpoints(train) == [train / "checkpoint-1"]
    consolidate(train / "checkpoint-1", AutoConfig.from_pretrained(base), AutoTokenizer.from_pretrained(base))
    assert sharded_checkpoints(train) == []

    model, _ = trained_model(base, train / "checkpoint-1", "float32", FULL)
    model = merged(model)
    loaded = model.state_dict()
    whole = torch.load(train / "whole.pt", weights_only=True)
    base_weights = trained_model(base, base, "float32", FULL)[0].state_dict()
    for name, tensor in whole.items():
        assert torch.equal(loaded[name], tensor), name
    assert not torch.equal(loaded["model.layers.0.mlp.up_proj.weight"],
                           base_weights["model.layers.0.mlp.up_proj.weight"])  # the step was saved, not the base


def test_a_sharded_adapter_is_consolidated_and_merges(tmp_path, tokenizer_dir):
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer

    from sft.checkpoints import merged, trained_model
    from sft.consolidate import consolidate, sharded_checkpoints

    base, train = sharded_run(tmp_path, tokenizer_dir, lora=True)
    checkpoint = sharded_checkpoints(train)[0]
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], base_model_name_or_path=str(base))
    consolidate(checkpoint, None, AutoTokenizer.from_pretrained(base), lora)
    assert (checkpoint / "adapter_config.json").is_file() and not (checkpoint / "model.safetensors").exists()

    model, _ = trained_model(base, checkpoint, "float32", LORA)
    whole = torch.load(train / "whole.pt", weights_only=True)
    adapter = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    assert set(adapter) == set(whole) and len(whole) == 8  # A and B of q and v in 2 layers
    for name, tensor in whole.items():
        assert torch.equal(adapter[name], tensor), name
    folded = merged(model).state_dict()["model.layers.1.self_attn.v_proj.weight"]
    untouched = trained_model(base, base, "float32", FULL)[0].state_dict()["model.layers.1.self_attn.v_proj.weight"]
    assert not torch.allclose(folded, untouched)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], sys.argv[3] == "1")
