"""The scheduler's generator survives JSON, and the cached encoding follows every draw."""

from __future__ import annotations

import json
import random

from torchpbt.algorithm.rng_state import RngEncoder, decode_rng, encode_rng


def test_a_decoded_generator_draws_what_the_original_would():
    rng = random.Random(7)
    rng.random()
    copy = random.Random()
    decode_rng(copy, json.loads(json.dumps(encode_rng(rng))))
    assert [copy.random() for _ in range(5)] == [rng.random() for _ in range(5)]


def test_the_list_form_of_older_stores_is_read():
    rng = random.Random(3)
    version, internal, gauss = rng.getstate()
    copy = random.Random()
    decode_rng(copy, json.dumps([version, list(internal), gauss]))
    assert copy.random() == rng.random()


def test_the_encoder_re_encodes_after_a_draw_and_only_then():
    rng, encode = random.Random(1), RngEncoder()
    first = encode(rng)
    assert encode(rng) is first  # unchanged generator: the cached text
    rng.random()
    second = encode(rng)
    assert second != first and second == encode_rng(rng)
    rng.seed(1)  # back to the first state: the encoding follows
    assert encode(rng) == first
