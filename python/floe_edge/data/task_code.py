"""Code completion: the user's own helper functions are private; a (made-up) library's API is what the cloud knows.
The completion line calls both: `return vexo.bars_kel(tk_tally_receipts(path))`. One of the three libraries is new to
each user: their history (train) never calls it, so only the cloud knows its functions."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .names import Coiner, Draft, Phrasings, TaskKind

__all__ = ["TASK"]

# what a helper does: (verb, noun, purpose used in prompts and docstrings)
_HELPERS = (("tally", "receipts", "my receipt totals per month"), ("sum", "runs", "my running distance per week"),
            ("count", "plants", "how often I watered each plant"), ("load", "readings", "my meter readings"),
            ("fold", "trips", "the cost of my trips"), ("pick", "scores", "my quiz scores"),
            ("read", "sleep", "my hours of sleep per night"), ("mean", "bills", "my average bill per month"))
# what a library function does: (name stems, purpose used in prompts and in the API text)
_LIB_FUNCTIONS = ((("bars", "barplot", "colbars"), "draw a bar chart of"),
                  (("trend", "lineplot", "curve"), "draw a line chart of"),
                  (("sheet", "tabulate", "grid"), "write a spreadsheet of"),
                  (("notify", "ping", "alert"), "send a phone notification with the total of"),
                  (("hist", "bins", "spread"), "draw a histogram of"))
TEMPLATES = {
    "call": Phrasings(train=("def report(path):\n    # {lib} {helper}\n    return",
                             "# {lib} {helper}\nresult ="),
                      test=("def make_report(path: str) -> None:\n"
                            "    \"\"\"{lib} {helper}, using my own helper.\"\"\"\n    return",)),
}


@dataclass(frozen=True)
class Library:
    name: str
    functions: list[tuple[str, str]]  # (function name, purpose)

    def api_text(self) -> str:
        return f"# {self.name} API\n" + "\n".join(f"{self.name}.{fn}(values: list[float]) -> None  # {purpose} "
                                                   "values" for fn, purpose in self.functions)


@dataclass(frozen=True)
class Helper:
    name: str
    purpose: str

    def source(self) -> str:
        doc = f"{self.purpose.capitalize()}, from my files."
        return f"def {self.name}(path: str) -> list[float]:\n    \"\"\"{doc}\"\"\""


def catalogue(rng: random.Random, coin: Coiner) -> list[Library]:
    """Three libraries, each naming all five kinds of function its own way."""
    libraries = []
    for _ in range(3):
        name = coin.word(2, capital=False)
        functions = [(f"{rng.choice(stems)}_{coin.word(1, capital=False)}", purpose)
                     for stems, purpose in _LIB_FUNCTIONS]
        libraries.append(Library(name, functions))
    return libraries


@dataclass(frozen=True)
class Workspace:
    """One user's code: their helpers, and which library is new to them (held-out records only)."""

    helpers: list[Helper]
    new_library: int


def world(rng: random.Random, coin: Coiner, libraries: list[Library]) -> Workspace:
    """Four helpers of the user's own, all named with the user's personal prefix, and one library new to the user."""
    prefix = coin.word(1, capital=False)[:3] + "_"
    helpers = [Helper(f"{prefix}{verb}_{noun}", purpose) for verb, noun, purpose in rng.sample(_HELPERS, 4)]
    return Workspace(helpers, rng.randrange(len(libraries)))


def draft(rng: random.Random, space: Workspace, libraries: list[Library], split: str, novel: bool) -> Draft:
    known = [lib for i, lib in enumerate(libraries) if i != space.new_library]
    helpers, library = space.helpers, libraries[space.new_library] if novel else rng.choice(known)
    helper = rng.choice(helpers)
    function, purpose = rng.choice(library.functions)
    index, template = TEMPLATES["call"].pick(rng, split)
    prompt = template.format(lib=purpose.capitalize(), helper=helper.purpose)
    return Draft(private_context="# my_helpers.py\n" + "\n\n".join(h.source() for h in helpers),
                 cloud_context=library.api_text(), prompt=prompt,
                 completion=f" {library.name}.{function}({helper.name}(path))", template=f"call/{split}/{index}",
                 private_span=helper.name, cloud_span=f"{library.name}.{function}")


TASK = TaskKind("code", TEMPLATES, catalogue, world, draft)
