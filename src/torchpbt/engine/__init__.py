"""What runs a PBT job: ``run``/``resume``, the controller (the one writer of a run),
checkpoints, the member contract and its preflight check, strategy specs for resume."""
