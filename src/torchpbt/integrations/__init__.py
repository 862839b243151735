"""Bridges to training libraries. Each module imports its library only when used:
``torchpbt.integrations.lightning`` needs ``pip install 'torchpbt[lightning]'``."""
