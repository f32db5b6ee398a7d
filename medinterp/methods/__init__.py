"""Methods: each measures one thing per layer and returns :class:`MethodResult` measurements.

Registered names equal the files in ``conf/method/``: ``umap`` (geometry), ``saliency`` (weight
gradients), ``ablation`` (identity lesions scored by a judge), ``patching`` (activation patching).
"""
from medinterp.methods import ablation, patching, saliency, umap_geometry  # noqa: F401  (registration)
from medinterp.methods.base import ItemValue, Measurement, MethodResult, ModelMethod, method_class, register_method
from medinterp.methods.points import Points, select_templates, stack_activations, stack_points

__all__ = ["ItemValue", "Measurement", "MethodResult", "ModelMethod", "Points", "method_class", "register_method",
           "select_templates", "stack_activations", "stack_points"]
