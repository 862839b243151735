"""PBT-NAS (Chebykin et al., 2023): architectures mixed during training, weights
inherited with shrink-perturb. Pure decision logic and tensor arithmetic here."""

from .genome import ArchSpace, GenomeError
from .mixing import MixResult, mix_genomes, mix_state, select_parents, shrink_perturb

__all__ = ["ArchSpace", "GenomeError", "MixResult", "mix_genomes", "mix_state",
           "select_parents", "shrink_perturb"]
