"""Generate the shipped benchmark suite: general knowledge and reading, as lm-evaluation-harness tasks.

    python data/generate_benchmarks.py --out data/benchmarks --seed 7

Writes general.jsonl and reading.jsonl (one item a line: `id`, `context`, `choices`, `answer`, the
index of the right choice). Every fact below was written for this project (Apache-2.0, as the
repository): no item is copied from a published benchmark, so none can have leaked into a base
model's pre-training as a test item. Each item is a cloze: the model's log-likelihood of each choice
after the context, the highest wins (lm-evaluation-harness `multiple_choice`). The task definitions
beside them (sft_general.yaml, sft_reading.yaml) are written by hand. The same seed gives the same bytes.

general: facts a small instruction-tuned model knows (capitals, animal classes, opposites, colours,
counting, the calendar), each with one wrong choice of the same kind, so chance is 50%.
reading: a two-sentence story, then a question on it; the wrong choice is another name, place or
object of the same story, so only reading it tells them apart (chance 50%).
"""

from __future__ import annotations

import argparse
import json
import os
import random

CAPITALS = {"France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin", "Japan": "Tokyo",
            "Egypt": "Cairo", "Russia": "Moscow", "England": "London", "Greece": "Athens", "Portugal": "Lisbon",
            "Austria": "Vienna", "Norway": "Oslo", "Sweden": "Stockholm", "Ireland": "Dublin", "China": "Beijing",
            "Kenya": "Nairobi", "Peru": "Lima", "Poland": "Warsaw", "Hungary": "Budapest", "Finland": "Helsinki",
            "Denmark": "Copenhagen", "Argentina": "Buenos Aires", "Thailand": "Bangkok", "Cuba": "Havana"}
CLASSES = {"dog": "mammal", "cat": "mammal", "horse": "mammal", "whale": "mammal", "cow": "mammal",
           "eagle": "bird", "sparrow": "bird", "owl": "bird", "parrot": "bird", "penguin": "bird",
           "salmon": "fish", "trout": "fish", "shark": "fish", "tuna": "fish",
           "snake": "reptile", "lizard": "reptile", "crocodile": "reptile", "turtle": "reptile",
           "frog": "amphibian", "toad": "amphibian"}
OPPOSITES = [("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("old", "young"),
             ("happy", "sad"), ("light", "dark"), ("early", "late"), ("open", "closed"), ("wet", "dry"),
             ("full", "empty"), ("high", "low"), ("loud", "quiet"), ("strong", "weak"), ("rich", "poor"),
             ("hard", "soft"), ("thick", "thin"), ("heavy", "light"), ("long", "short"), ("win", "lose")]
COLOURS = {"grass": "green", "snow": "white", "the sky on a clear day": "blue", "a ripe banana": "yellow",
           "coal": "black", "blood": "red", "a ripe tomato": "red", "milk": "white", "a carrot": "orange",
           "a lemon": "yellow", "charcoal": "black", "a fresh leaf": "green"}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack", "Kate", "Leo",
         "Maria", "Nick", "Olga", "Paul", "Rosa", "Sam", "Tina", "Victor"]
PLACES = ["kitchen", "garden", "library", "station", "garage", "office", "market", "cellar", "school", "park"]
THINGS = ["umbrella", "guitar", "bicycle", "camera", "ladder", "basket", "lamp", "kite", "hammer", "violin"]


def general(rng: random.Random) -> list[tuple[str, str, str]]:
    """(context, right, wrong) facts, the wrong one drawn from the same table."""
    items = []
    for country, city in CAPITALS.items():
        wrong = rng.choice([c for c in CAPITALS.values() if c != city])
        items.append((f"The capital city of {country} is", city, wrong))
    for animal, kind in CLASSES.items():
        wrong = rng.choice(sorted({k for k in CLASSES.values() if k != kind}))
        article = "an" if kind[0] in "aeiou" else "a"
        items.append((f"A {animal} is {article} kind of", kind, wrong))
    for word, opposite in OPPOSITES:
        wrong = rng.choice([w for w, _ in OPPOSITES if w not in (word, opposite)])
        items.append((f"The opposite of {word} is", opposite, wrong))
    for thing, colour in COLOURS.items():
        wrong = rng.choice(sorted({c for c in COLOURS.values() if c != colour}))
        items.append((f"The colour of {thing} is", colour, wrong))
    for a in range(1, 7):
        for b in range(a, 7):
            total = a + b
            wrong = NUMBERS[total + rng.choice([-1, 1])] if total < len(NUMBERS) - 1 else NUMBERS[total - 1]
            items.append((f"{NUMBERS[a].capitalize()} plus {NUMBERS[b]} equals", NUMBERS[total], wrong))
    for i, day in enumerate(DAYS):
        wrong = DAYS[(i + rng.choice([2, 3, 4])) % 7]
        items.append((f"The day after {day} is", DAYS[(i + 1) % 7], wrong))
    for i, month in enumerate(MONTHS):
        wrong = MONTHS[(i + rng.choice([3, 5, 7])) % 12]
        items.append((f"The month after {month} is", MONTHS[(i + 1) % 12], wrong))
    return items


def reading(rng: random.Random, count: int) -> list[tuple[str, str, str]]:
    """(story and question, right, wrong): the wrong choice is the story's other name, place or thing."""
    items = []
    for _ in range(count):
        a, b = rng.sample(NAMES, 2)
        pa, pb = rng.sample(PLACES, 2)
        ta, tb = rng.sample(THINGS, 2)
        story = f"{a} left a {ta} in the {pa}. {b} left a {tb} in the {pb}."
        kind = rng.choice(["where", "what", "who"])
        if kind == "where":
            items.append((f"{story} Question: Where is the {ta}? Answer: In the", pa, pb))
        elif kind == "what":
            items.append((f"{story} Question: What did {b} leave? Answer: A", tb, ta))
        else:
            items.append((f"{story} Question: Who left the {tb}? Answer:", b, a))
    return items


def rows(items: list[tuple[str, str, str]], rng: random.Random, prefix: str) -> list[dict]:
    """Each item with its choices in a seeded order, so the right one is not always first."""
    out = []
    for i, (context, right, wrong) in enumerate(items):
        choices = [right, wrong]
        rng.shuffle(choices)
        out.append({"id": f"{prefix}-{i:03d}", "context": context, "choices": choices,
                    "answer": choices.index(right)})
    return out


def write_jsonl(path: str, records: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/benchmarks")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--reading", type=int, default=120, help="reading items")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    facts = rows(general(rng), rng, "general")
    stories = rows(reading(rng, args.reading), rng, "reading")
    write_jsonl(os.path.join(args.out, "general.jsonl"), facts)
    write_jsonl(os.path.join(args.out, "reading.jsonl"), stories)
    print(f"{len(facts)} general items, {len(stories)} reading items in {args.out}")


if __name__ == "__main__":
    main()
