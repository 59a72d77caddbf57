"""An example collapselab plugin: a Laplace family, a sliding-window policy, a kurtosis metric.

Nothing here registers itself: the entry points in pyproject.toml give the names, and a config can
name each class by import path (``collapselab_laplace.family:Laplace``) without installing.
"""

from collapselab_laplace.family import Laplace
from collapselab_laplace.metric import Kurtosis
from collapselab_laplace.policy import Window

__all__ = ["Kurtosis", "Laplace", "Window"]
