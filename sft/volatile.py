"""Figures that vary by machine and run (wall time, throughput, peak memory), kept out of every
output DVC hashes, so that the same inputs give the same lock entries on any machine.

They go to their own files under metrics/speed/: top-level metrics in dvc.yaml, not stage outputs,
so neither dvc.lock nor the run-cache depends on them (a `cache: false` output would still be
hashed, and a run-cache entry naming it cannot be restored on another machine). Files
written by libraries get the same treatment before they become outputs: the trainer's state
loses its runtimes and rates, a tokenizer config loses how it was loaded, and an adapter config
and a model card list their target modules and tags in a fixed order (peft and trl keep them in
sets, whose order follows PYTHONHASHSEED).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

VOLATILE = re.compile(r"(_runtime|_per_second|_seconds)$|^peak_memory_gb$")

# Written into tokenizer_config.json by from_pretrained, yet about how it was loaded, not about the
# tokenizer: local_files_only follows HF_HUB_OFFLINE.
LOAD_TIME_KEYS = ("local_files_only", "is_local", "_commit_hash", "cache_dir", "token", "force_download",
                  "proxies", "subfolder", "gguf_file", "trust_remote_code")


def is_volatile(key: str) -> bool:
    return bool(VOLATILE.search(key))


def split(figures: dict) -> tuple[dict, dict]:
    """(figures that the same inputs reproduce, figures that vary by machine)."""
    return ({k: v for k, v in figures.items() if not is_volatile(k)},
            {k: v for k, v in figures.items() if is_volatile(k)})


def rewrite_json(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    new = change(data)
    if new != data:
        path.write_text(json.dumps(new, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def without_timings(state: dict) -> dict:
    return {**state, "log_history": [{k: v for k, v in entry.items() if not is_volatile(k)}
                                     for entry in state.get("log_history", [])]}


def without_load_time_keys(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in LOAD_TIME_KEYS}


def with_sorted_targets(config: dict) -> dict:
    targets = config.get("target_modules")
    return {**config, "target_modules": sorted(targets)} if isinstance(targets, list) else config


SCRUBS = {"trainer_state.json": without_timings, "tokenizer_config.json": without_load_time_keys,
          "adapter_config.json": with_sorted_targets}


def with_sorted_card_tags(card: str) -> str:
    """A model card whose YAML header lists its tags sorted (the header is '---' lines at the top)."""
    lines = card.split("\n")
    if not lines or lines[0] != "---" or "---" not in lines[1:]:
        return card
    end = lines.index("---", 1)
    out, i = lines[:1], 1
    while i < end:
        out.append(lines[i])
        if lines[i] == "tags:":
            items = []
            while i + 1 < end and lines[i + 1].startswith("- "):
                i += 1
                items.append(lines[i])
            out.extend(sorted(items))
        i += 1
    return "\n".join(out + lines[end:])


def scrub(folder: str | Path) -> None:
    """Make every file of a model or run folder that libraries wrote independent of the machine."""
    for name, change in SCRUBS.items():
        for path in sorted(Path(folder).rglob(name)):
            rewrite_json(path, change)
    for path in sorted(Path(folder).rglob("README.md")):
        card = path.read_text(encoding="utf-8")
        if with_sorted_card_tags(card) != card:
            path.write_text(with_sorted_card_tags(card), encoding="utf-8")
