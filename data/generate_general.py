"""Extract the embedded general-text sample that the forgetting stage scores: prose paragraphs
from Python's reference documentation, as the standard library ships it (pydoc_data.topics).

    python data/generate_general.py --out data/general/python-reference.jsonl

Writes one JSON line a document, {"id", "topic", "text"}: consecutive prose paragraphs of one
topic (grammar rules and indented code left out) joined up to about `--chars` characters,
`--documents` of them, taken in the topics' sorted order. It is English text that is no task's
data, offline on every machine; its license is the Python Software Foundation License Version 2
(data/general/README.md). The same Python version gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import pydoc_data.topics
import re
from pathlib import Path

HEADING = re.compile(r"^[*=\-~^]+$")


def paragraphs(text: str) -> list[str]:
    """Prose paragraphs: not indented (code and grammar are), not headings, mostly words."""
    kept = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()
        if not lines or lines[0].startswith(" ") or any(HEADING.match(x.strip()) for x in lines):
            continue
        prose = " ".join(x.strip() for x in lines)
        if len(prose) >= 120 and sum(c.isalpha() or c == " " for c in prose) / len(prose) > 0.85:
            kept.append(prose)
    return kept


def documents(chars: int) -> list[dict]:
    out = []
    for topic in sorted(pydoc_data.topics.topics):
        current = ""
        for para in paragraphs(pydoc_data.topics.topics[topic]):
            current = f"{current}\n\n{para}" if current else para
            if len(current) >= chars:
                out.append({"topic": topic, "text": current})
                current = ""
        if len(current) >= chars // 2:
            out.append({"topic": topic, "text": current})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/general/python-reference.jsonl")
    ap.add_argument("--documents", type=int, default=300)
    ap.add_argument("--chars", type=int, default=600)
    args = ap.parse_args()
    docs = documents(args.chars)[: args.documents]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, **d}, ensure_ascii=False) + "\n")
    print(f"{out}: {len(docs)} documents, {sum(len(d['text']) for d in docs)} characters")


if __name__ == "__main__":
    main()
