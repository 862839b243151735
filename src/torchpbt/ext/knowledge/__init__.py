"""Knowledge sharing (Oehmcke & Kramer, 2018): the best members teach the population."""

from .sharing import KnowledgeSharing, KnowledgeTable, SharedKnowledge, distillation_loss

__all__ = ["KnowledgeSharing", "KnowledgeTable", "SharedKnowledge", "distillation_loss"]
