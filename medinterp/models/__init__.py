"""Models: specs, packaged-weight materialization, architecture adapters, loading, and reading weights wherever
they are placed (medinterp/models/weights.py: ZeRO-3 partitions, offload)."""
from medinterp.models.arch import ArchAdapter, BoundModel, adapter_for, get_module, registered
from medinterp.models.load import ModelHandle, Placement, load_model, resolve_device
from medinterp.models.sources import default_cache_dir, materialize
from medinterp.models.spec import ModelSpec
from medinterp.models.tiny import build_tiny_model

__all__ = ["ArchAdapter", "BoundModel", "ModelHandle", "ModelSpec", "Placement", "adapter_for", "build_tiny_model",
           "default_cache_dir", "get_module", "load_model", "materialize", "registered", "resolve_device"]
