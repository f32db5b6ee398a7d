"""Activation capture: token reductions, batched capture and the on-disk activation cache."""
from medinterp.capture.residual import batch_order, capture, capture_batch, capture_indices, readout_modules
from medinterp.capture.tokens import REDUCTIONS, TokenBatch, encode, reduce_tokens

__all__ = ["REDUCTIONS", "TokenBatch", "batch_order", "capture", "capture_batch", "capture_indices", "encode",
           "readout_modules", "reduce_tokens"]
