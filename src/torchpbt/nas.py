"""``torchpbt.nas``: the public name of the PBT-NAS extension (``torchpbt.ext.nas``)."""

from .ext.nas import *  # noqa: F403
from .ext.nas import __all__  # noqa: F401
