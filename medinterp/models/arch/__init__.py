"""Architecture adapters; importing this package registers every family."""
from medinterp.models.arch import gemma3, gpt_oss, llama, llava, mistral, qwen  # noqa: F401  (registration side effects)
from medinterp.models.arch.base import ArchAdapter, BoundModel, adapter_for, discover, get_module, registered

__all__ = ["ArchAdapter", "BoundModel", "adapter_for", "discover", "get_module", "registered"]
