"""Charts that draw offline: PNGs rendered by vl-convert (no browser), and an HTML template for
`dvc plots show` with vega, vega-lite and vega-embed inlined instead of loaded from a CDN."""

from __future__ import annotations

import csv
from pathlib import Path

# dvc plots show puts its charts' <div>s and scripts where this placeholder stands.
DVC_PLACEHOLDER = "{plot_divs}"
# A font that travels with the project (font-roboto's files): vega's default falls back on
# whatever fonts the machine has, and the PNG's bytes would differ from machine to machine.
FONT = "Roboto"


def with_font(spec: dict) -> dict:
    """`spec` drawn in FONT, the font registered with vl-convert from the font-roboto package."""
    import font_roboto
    import vl_convert

    vl_convert.register_font_directory(font_roboto.font_directory)
    return {**spec, "config": {**spec.get("config", {}), "font": FONT}}


def loss_rows(folder: Path) -> list[dict]:
    """DVCLive's loss per step (train/loss.tsv, eval/loss.tsv under `folder`), one row per point."""
    rows = []
    for split in ("train", "eval"):
        path = folder / split / "loss.tsv"
        if path.is_file():
            with path.open(encoding="utf-8") as f:
                rows += [{"step": int(r["step"]), "loss": float(r["loss"]), "split": split}
                         for r in csv.DictReader(f, delimiter="\t")]
    return rows


def loss_spec(rows: list[dict]) -> dict:
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "width": 480, "height": 240,
            "data": {"values": rows}, "mark": {"type": "line", "point": True},
            "encoding": {"x": {"field": "step", "type": "quantitative"},
                         "y": {"field": "loss", "type": "quantitative", "scale": {"zero": False}},
                         "color": {"field": "split", "type": "nominal", "title": None}}}


def loss_png(folder: Path, out: Path) -> bool:
    """The loss curves as a PNG at `out`; False (and nothing written) without any loss logged."""
    import vl_convert

    rows = loss_rows(folder)
    if not rows:
        return False
    out.write_bytes(vl_convert.vegalite_to_png(with_font(loss_spec(rows)), scale=2))
    return True


def offline_template() -> str:
    """An HTML page for `dvc plots show --html-template` that loads nothing from the network."""
    import vl_convert

    bundle = vl_convert.javascript_bundle().replace("</script", "<\\/script")
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>DVC plots</title>\n"
            f"<script>\n{bundle}\n</script>\n</head>\n<body>\n{DVC_PLACEHOLDER}\n</body>\n</html>\n")
