"""Reading a run back: ``Result``, lineage, the ``Schedule`` of a member, replay, flat
tables and TensorBoard export. Reads the store and checkpoints; never writes a run."""
