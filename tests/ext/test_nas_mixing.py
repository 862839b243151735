"""PBT-NAS pure parts: genome space, parent selection, gene mixing, shrink-perturb."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from torchpbt.ext.nas.mixing import gene_origins
from torchpbt.nas import (
    ArchSpace,
    GenomeError,
    mix_genomes,
    mix_state,
    select_parents,
    shrink_perturb,
)

SPACE = ArchSpace({"cell0": ["conv3", "conv5", "skip"], "cell1": ["conv3", "conv5", "skip"],
                   "cell2": ["conv3", "conv5"]})


def build(genome):
    """A toy builder: each position's parameters live under its name."""
    layers = {"stem": nn.Linear(4, 8)}
    for pos, op in genome.items():
        layers[pos] = nn.Linear(8, 8, bias=op != "skip") if op != "conv5" else nn.Sequential(
            nn.Linear(8, 8), nn.Linear(8, 8))
    layers["head"] = nn.Linear(8, 2)
    return nn.ModuleDict(layers)


def test_shrink_perturb_formula_on_known_tensors():
    donor, fresh = torch.tensor([1.0, -2.0, 4.0]), torch.tensor([10.0, 0.0, -1.0])
    assert torch.equal(shrink_perturb(donor, fresh), torch.tensor([0.4 + 1.0, -0.8, 1.6 - 0.1]))
    assert torch.equal(shrink_perturb(donor, fresh, 1.0, 0.0), donor)   # copy
    assert torch.equal(shrink_perturb(donor, fresh, 0.0, 1.0), fresh)   # re-init
    counts = torch.tensor(7)
    assert torch.equal(shrink_perturb(counts, torch.tensor(0)), counts)  # int buffers copied
    with pytest.raises(ValueError, match="equal shapes"):
        shrink_perturb(donor, torch.zeros(2))


def test_mixed_child_base_layers_bit_identical_donor_layers_shrink_perturbed():
    torch.manual_seed(0)
    base_g = {"cell0": "conv3", "cell1": "conv5", "cell2": "conv3"}
    donor_g = {"cell0": "skip", "cell1": "conv3", "cell2": "conv5"}
    base, donor = build(base_g).state_dict(), build(donor_g).state_dict()
    origin = {"cell0": "donor", "cell1": "base", "cell2": "donor"}
    child_g = {"cell0": "skip", "cell1": "conv5", "cell2": "conv5"}
    fresh = build(child_g).state_dict()
    child = mix_state(SPACE, fresh, base, donor, origin)
    assert set(child) == set(fresh)
    for key, value in child.items():
        pos = SPACE.position_of(key)
        if pos is None or origin[pos] == "base":
            assert torch.equal(value, base[key]), key  # bit-identical
        else:
            assert torch.allclose(value, 0.4 * donor[key] + 0.1 * fresh[key]), key
    build(child_g).load_state_dict(child)  # the mixed child loads into its own architecture


def test_gene_inheritance_frequency_matches_probability():
    rng = random.Random(0)
    base = {"cell0": "conv3", "cell1": "conv3", "cell2": "conv3"}
    donor = {"cell0": "skip", "cell1": "skip", "cell2": "conv5"}
    results = [mix_genomes(SPACE, base, donor, rng, 0.25) for _ in range(4000)]
    frac = gene_origins(results)
    sd = math.sqrt(0.25 * 0.75 / 12000)
    assert abs(frac - 0.25) < 4 * sd
    for r in results[:50]:
        for p in SPACE.positions:
            assert r.genome[p] == (donor[p] if r.origin[p] == "donor" else base[p])


def test_select_parents_replaces_bottom_from_top_with_fitter_base():
    rng = random.Random(1)
    scores = {i: float(i) for i in range(8)}  # 6, 7 top; 0, 1 bottom
    for _ in range(50):
        plan = select_parents(scores, rng, 0.25)
        assert set(plan) == {0, 1}
        for base, donor in plan.values():
            assert {base, donor} == {6, 7} and scores[base] >= scores[donor]
    assert select_parents({0: 1.0, 1: 2.0, 2: 3.0}, rng) == {}  # fewer than two parents


def test_bad_spaces_and_genomes_are_refused():
    for bad, match in [({}, "non-empty"), ({"0cell": ["a"]}, "identifier"),
                       ({"c": []}, "non-empty list"), ({"c": "conv3"}, "non-empty list"),
                       ({"c": ["a", "a"]}, "twice"), ({"c": ["a", 3]}, "non-empty string")]:
        with pytest.raises(GenomeError, match=match):
            ArchSpace(bad)
    with pytest.raises(GenomeError, match="missing positions"):
        SPACE.validate({"cell0": "conv3"})
    with pytest.raises(GenomeError, match="not one of"):
        SPACE.validate({"cell0": "conv7", "cell1": "skip", "cell2": "conv3"})
    with pytest.raises(ValueError, match="p_donor"):
        mix_genomes(SPACE, SPACE.sample(random.Random(0)), SPACE.sample(random.Random(1)),
                    random.Random(0), 1.5)
