"""Methods: each measures one thing per layer and returns :class:`MethodResult` measurements.

Registered names equal the files in ``conf/method/``: ``umap`` (geometry). Saliency, ablation and
patching follow.
"""
from medinterp.methods import umap_geometry  # noqa: F401  (registration)
from medinterp.methods.base import Measurement, MethodResult, method_class, register_method, registered_methods
from medinterp.methods.points import Points, select_templates, stack_activations, stack_points

__all__ = ["Measurement", "MethodResult", "Points", "method_class", "register_method", "registered_methods",
           "select_templates", "stack_activations", "stack_points"]
