"""The accelerate launch configs parse as accelerate's own config files and say how to use them."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from conftest import ROOT

CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


def test_the_four_configs_exist():
    assert [p.name for p in CONFIGS] == ["deepspeed_zero3.yaml", "fsdp.yaml", "multi_gpu.yaml", "single.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_opens_with_its_command(path: Path):
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_processes >= 1
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any("accelerate launch" in line or "make train-multi" in line for line in header)
