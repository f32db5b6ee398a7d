"""Methods: each measures one thing per layer and returns :class:`MethodResult` measurements.

Every method is a :class:`Method` (the one seam; medinterp/methods/base.py). Registered names equal the files in
``conf/method/``: ``umap`` (geometry), ``saliency`` (weight gradients), ``ablation`` (identity lesions scored by a
judge), ``patching`` (activation patching), ``geometry`` (linearity, anisotropy, intrinsic
dimension, contextualization, logit lens), ``neurons`` (knowledge / multimodal MLP neurons), ``image_lens`` (logit lens on
image tokens), ``gradcam`` (Grad-CAM on image patches); the last three: docs/multimodal.md.
"""
from medinterp.methods.base import (PERSISTED, ItemValue, Measurement, Method, MethodResult, method_class,
                                    register_method)
from medinterp.methods.points import Points, select_templates, stack_activations, stack_points
from medinterp.methods import ablation, geometry, patching, saliency, umap_geometry  # noqa: F401,E402  (registration)
from medinterp.methods import gradcam, image_lens, neurons  # noqa: F401,E402  (registration: docs/multimodal.md)

__all__ = ["PERSISTED", "ItemValue", "Measurement", "Method", "MethodResult", "Points", "method_class",
           "register_method", "select_templates", "stack_activations", "stack_points"]
