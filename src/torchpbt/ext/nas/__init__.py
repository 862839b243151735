"""PBT-NAS (Chebykin et al., 2023): architectures mixed during training, weights
inherited with shrink-perturb. Pure decision logic and tensor arithmetic here."""

from ...algorithm.space import Gene
from .genome import ArchSpace, GenomeError
from .member import NASMember
from .mixing import MixResult, mix_genomes, mix_state, select_parents, shrink_perturb
from .strategies import Mixing, Mutation, Plan

__all__ = ["ArchSpace", "Gene", "GenomeError", "MixResult", "Mixing", "Mutation", "NASMember",
           "Plan", "mix_genomes", "mix_state", "select_parents", "shrink_perturb"]
