"""Trigger words: rare for the tokenizer, pronounceable, unique per user.

A trigger word should be a string the base model has no meaning for (so the LoRA can give
it one) that still costs few tokens (so it binds cleanly). Consonant-vowel syllables give
short, pronounceable made-up words ("valkor", "zinesh"); common English words and the
famous overused ones ("sks", "ohwx") are refused. The API checks the candidates against
the base model's real tokenizer (`app.trainings.tokens`) and takes the first that fits the
token budget; the API decides the word once, before it answers, and the worker never changes it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable

VALID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{1,31}$")
MAX_TOKENS = 3  # CLIP splits a made-up 5-7 letter word into 2-3 pieces

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "tr", "vr", "zh")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou")
_CODAS = ("", "", "n", "r", "l", "k", "x", "sh", "th", "m")

# Words people use as triggers already (they carry meaning from other LoRAs) or that are real words.
_AVOID = frozenset(
    """sks ohwx zwx tok xyz man woman person photo style art the and for you are not but had has her his him
    one our out day get may new now old see two way who boy did its let put say she too use dad mom kid
    baker banker river lemon melon salon solar polar radar later tumor rumor donor sonar motor robot
    tiger toner token total vodka koala lava data beta delta gamma zeta sigma alpha omega nova luna lola
    mona nina tina lena rosa maria ana sara zara dora kara mara tara vera""".split()
)


def candidates(seed: int) -> Iterable[str]:
    """An endless, deterministic stream of pronounceable made-up words."""
    rng = random.Random(seed)
    while True:
        syllables = rng.choice((2, 2, 3))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
        if 5 <= len(word) <= 9 and word not in _AVOID and not _has_real_word(word):
            yield word


def _has_real_word(word: str) -> bool:
    return any(w in word for w in _AVOID if len(w) >= 4)


def generate(
    *,
    seed: int,
    taken: set[str],
    count_tokens: Callable[[str], int] | None = None,
    max_tokens: int = MAX_TOKENS,
    tries: int = 512,
) -> str:
    """The first candidate not `taken` that fits `max_tokens`; failing that, the one with fewest tokens."""
    best, best_tokens = None, 10**9
    for index, word in enumerate(candidates(seed)):
        if index >= tries and best is not None:
            break
        if word in taken:
            continue
        tokens = count_tokens(word) if count_tokens else 0
        if tokens <= max_tokens:
            return word
        if tokens < best_tokens:
            best, best_tokens = word, tokens
    return best  # type: ignore[return-value]


def is_common(word: str) -> bool:
    """Whether a user-chosen trigger is a word the model already knows well (then it is refused)."""
    return word.lower() in _AVOID
