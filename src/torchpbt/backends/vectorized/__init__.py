"""A whole population as one batched model (``torch.func``): the core of the vectorized
backend (issue 18). ``StackedModules`` holds P copies of an ordinary ``nn.Module`` as
stacked tensors and runs them with one ``vmap``; ``VectorSGD``/``VectorAdam`` step
every member with its own hyperparameters (tensors of P values); ``copy_member``
is exploit as an in-memory slice copy."""

from .optim import VectorAdam, VectorSGD
from .stacked import StackedModules, copy_member

__all__ = ["StackedModules", "VectorAdam", "VectorSGD", "copy_member"]
