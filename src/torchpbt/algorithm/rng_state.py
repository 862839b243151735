"""The scheduler's random generator as JSON: committed with the run, so a resumed run
draws the numbers the interrupted one would have."""

from __future__ import annotations

import array
import base64
import json
import random
from typing import Any

_WORD = "I" if array.array("I").itemsize == 4 else "L"  # an unsigned 32-bit array type


def encode_rng(rng: random.Random) -> str:
    """The Mersenne Twister state as one base64 string: a third of its JSON list's size,
    and it is written with every step."""
    version, internal, gauss = rng.getstate()
    if version != 3 or gauss is not None:  # never for random.Random: keep it exact anyway
        return json.dumps([version, list(internal), gauss])
    return base64.b64encode(array.array(_WORD, internal).tobytes()).decode()


def decode_rng(rng: random.Random, state: Any) -> None:
    """Inverse of :func:`encode_rng`; also reads the list form torchpbt 0.1 stored."""
    if isinstance(state, str) and state.startswith("["):
        state = json.loads(state)
    if isinstance(state, str):
        words = array.array(_WORD)
        words.frombytes(base64.b64decode(state))
        rng.setstate((3, tuple(words), None))
        return
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


class RngEncoder:
    """:func:`encode_rng`, redone only when the generator has moved since the last call:
    most steps draw no random number, and encoding its 2.5 KB state every step shows in
    a large population's per-step cost."""

    def __init__(self) -> None:
        self._state: tuple[Any, ...] | None = None
        self._text = ""

    def __call__(self, rng: random.Random) -> str:
        state = rng.getstate()
        if state != self._state:
            self._state, self._text = state, encode_rng(rng)
        return self._text
