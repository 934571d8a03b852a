"""make plots: the pipeline's charts (dvc.yaml's `plots:`) as a page that opens offline and as PNGs.

    python -m apps.plots --out dvc_plots

`dvc plots show` writes the page through a local HTML template with vega, vega-lite and
vega-embed inlined (sft/plots.py), since its default page loads them from a CDN and an offline
machine draws nothing. The same charts, filled by `dvc plots show --json`, are rendered to
<out>/<plot>.png by vl-convert, without a browser.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from sft.plots import offline_template, with_font


def charts() -> dict[str, dict]:
    """Each plot's vega-lite spec with its data, as dvc fills it (plots that failed to load are left out)."""
    done = subprocess.run(["dvc", "plots", "show", "--json"], capture_output=True, text=True, check=True)
    data = json.loads(done.stdout)["data"]
    return {name: item["content"] for name, items in data.items() for item in items[:1]
            if item.get("type") == "vega" and item["content"]["data"]["values"]}


def main() -> None:
    import vl_convert

    ap = argparse.ArgumentParser(description="The pipeline's plots as an offline page and PNGs.")
    ap.add_argument("--out", default="dvc_plots")
    args = ap.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "offline.html"
        template.write_text(offline_template(), encoding="utf-8")
        subprocess.run(["dvc", "plots", "show", "--html-template", str(template), "-o", str(out)], check=True)
    for name, spec in charts().items():
        (out / f"{name}.png").write_bytes(vl_convert.vegalite_to_png(with_font(spec), scale=2))
        print(f"[plots] {out / name}.png", flush=True)
    print(f"[plots] {out / 'index.html'} (opens offline)", flush=True)


if __name__ == "__main__":
    main()
