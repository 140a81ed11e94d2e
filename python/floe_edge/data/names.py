"""Fictional names and the pieces every task generator shares.

Names are coined from syllables by a seeded `random.Random`, so neither the edge nor the cloud model can know them
from pretraining: whatever the answer needs must come from the context it reads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping

__all__ = ["Coiner", "Phrasings", "Draft", "TaskKind", "DAYS"]

_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "k", "kl", "l", "m", "n", "p", "pl", "r", "s", "st", "t", "tr", "v",
           "z", "sh", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "io", "ou")
_CODAS = ("", "", "", "n", "r", "l", "x", "s", "m", "nd", "rk", "th")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class Coiner:
    """Coins pronounceable made-up words, never the same one twice (one Coiner per generated data set)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[str] = set()

    def word(self, syllables: int = 2, capital: bool = True) -> str:
        for _ in range(1000):
            parts = [self._rng.choice(_ONSETS) + self._rng.choice(_VOWELS) for _ in range(syllables)]
            word = "".join(parts) + self._rng.choice(_CODAS)
            if word not in self._used and len(word) >= 4:
                self._used.add(word)
                return word.capitalize() if capital else word
        raise RuntimeError("ran out of fresh names")  # 20k+ combinations per syllable count: not reached


@dataclass(frozen=True)
class Phrasings:
    """The prompt templates of one intent. Held-out (test) records use only `test`, training records only `train`:
    the two tuples never share a template, so the held-out split measures more than recall of seen phrasings."""

    train: tuple[str, ...]
    test: tuple[str, ...]

    def pick(self, rng: random.Random, split: str) -> tuple[int, str]:
        choices = self.train if split == "train" else self.test
        index = rng.randrange(len(choices))
        return index, choices[index]


@dataclass(frozen=True)
class Draft:
    """One record before it gets its user and task, with the spans that make it need both sides: `private_span`
    occurs in the completion and the private context only, `cloud_span` in the completion and the cloud context only."""

    private_context: str
    cloud_context: str
    prompt: str
    completion: str
    template: str  # "<intent>/<split>/<index>"
    private_span: str
    cloud_span: str


@dataclass(frozen=True)
class TaskKind:
    """A task generator: `catalogue` is the world knowledge only the cloud has (shared by all users), `world` one
    user's private world, `draft` one record of that user: `novel` ones (held-out only) need world knowledge that no
    record of the user's history holds."""

    name: str
    templates: Mapping[str, Phrasings]
    catalogue: Callable[[random.Random, Coiner], Any]
    world: Callable[[random.Random, Coiner, Any], Any]
    draft: Callable[[random.Random, Any, Any, str, bool], Draft]
