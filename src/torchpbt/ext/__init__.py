"""Extensions on top of plain PBT: knowledge sharing (``ext.knowledge``) and PBT-NAS
architecture mixing (``ext.nas``)."""
