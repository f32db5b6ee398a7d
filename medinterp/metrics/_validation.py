"""Input checks shared by the metric functions.

Each check coerces its argument and raises :class:`~medinterp.errors.MedinterpError` with a one-line,
scikit-learn-style message naming the parameter, the function, what was expected and what was received:
"The 'k' parameter of local_anisotropy must be an int in [2, n_samples-1] = [2, 99]. Got 500 instead."
"""
from __future__ import annotations

import numpy as np
import torch

from medinterp.errors import MedinterpError
from medinterp.validation import is_int, is_number


def _bad(name: str, fn: str, expected: str, got: str) -> MedinterpError:
    return MedinterpError(f"The {name!r} parameter of {fn} must be {expected}. Got {got} instead.")


def check_matrix(X, fn: str, name: str = "X", min_rows: int = 2, min_cols: int = 1) -> np.ndarray:
    """Return ``X`` as a float64 (n, d) array with n >= min_rows, d >= min_cols and only finite values."""
    expected = f"a 2-D array of finite numbers with at least {min_rows} rows and {min_cols} columns"
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise _bad(name, fn, expected, f"a non-numeric {type(X).__name__}") from None
    if arr.ndim != 2 or arr.shape[0] < min_rows or arr.shape[1] < min_cols:
        raise _bad(name, fn, expected, f"shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise _bad(name, fn, expected, f"{int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def check_tensor(X, fn: str, name: str = "X", min_rows: int = 2, ndim: int = 2) -> torch.Tensor:
    """Return ``X`` (torch tensor or array-like) as a float64 tensor on its own device (numpy -> CPU) with
    ``ndim`` dimensions, at least ``min_rows`` entries along the first and one along every other, all finite."""
    shape = {2: "(n, d)", 3: "(n_terms, n_contexts, d)"}.get(ndim, f"{ndim}-D")
    expected = f"a {shape} tensor of finite numbers with at least {min_rows} rows"
    if not isinstance(X, torch.Tensor):
        try:
            X = torch.as_tensor(np.asarray(X, dtype=np.float64))
        except (TypeError, ValueError):
            raise _bad(name, fn, expected, f"a non-numeric {type(X).__name__}") from None
    if X.ndim != ndim or X.shape[0] < min_rows or min(X.shape[1:], default=1) < 1:
        raise _bad(name, fn, expected, f"shape {tuple(X.shape)}")
    if X.is_complex() or X.dtype == torch.bool:
        raise _bad(name, fn, expected, f"dtype {X.dtype}")
    X = X.to(torch.float64)
    bad = int((~torch.isfinite(X)).sum())
    if bad:
        raise _bad(name, fn, expected, f"{bad} non-finite values")
    return X


def check_groups(groups, n: int, fn: str, device: torch.device) -> torch.Tensor:
    """Return ``groups`` (one integer label per row, e.g. the prompt id) as a (n,) int64 tensor of dense ids
    0..n_groups-1 (in sorted order of the labels) on ``device``."""
    if isinstance(groups, torch.Tensor):
        groups = groups.cpu().numpy()
    arr = check_vector(groups, fn, "groups", n=n, numeric=False)
    if arr.dtype.kind not in "iu":
        raise _bad("groups", fn, f"a 1-D integer array of length {n} (one per row of X)", f"dtype {arr.dtype}")
    return torch.as_tensor(np.unique(arr, return_inverse=True)[1].ravel(), device=device)


def check_vector(y, fn: str, name: str, n: int | None = None, numeric: bool = True) -> np.ndarray:
    """Return ``y`` as a 1-D array (float64 and finite if ``numeric``) of length ``n`` when given."""
    length = "" if n is None else f" of length {n} (one per row of X)"
    expected = f"a 1-D array{' of finite numbers' if numeric else ''}{length}"
    try:
        arr = np.asarray(y, dtype=np.float64) if numeric else np.asarray(y)
    except (TypeError, ValueError):
        raise _bad(name, fn, expected, f"a non-numeric {type(y).__name__}") from None
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        raise _bad(name, fn, expected, f"shape {arr.shape}")
    if numeric and not np.isfinite(arr).all():
        raise _bad(name, fn, expected, f"{int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def check_int(value, name: str, fn: str, low: int, high: int | None = None, high_text: str | None = None) -> int:
    """Return ``value`` as an int in [low, high] (high=None: unbounded); bools are refused."""
    if high is None:
        expected = f"an int >= {low}"
    else:
        bounds = f"[{low}, {high_text}] = [{low}, {high}]" if high_text else f"[{low}, {high}]"
        expected = f"an int in {bounds}"
    if not is_int(value) or value < low or (high is not None and value > high):
        raise _bad(name, fn, expected, repr(value))
    return int(value)


def check_alpha(alpha, fn: str) -> float:
    """Return the two-sided miscoverage ``alpha`` as a float in (0, 1)."""
    if not is_number(alpha) or not 0.0 < alpha < 1.0:
        raise _bad("alpha", fn, "a float in (0, 1)", repr(alpha))
    return float(alpha)


def check_labels(labels, n: int, fn: str) -> np.ndarray:
    """Return ``labels`` as a 1-D array of length n with 2 <= n_classes <= n - 1 (when silhouette is defined)."""
    arr = check_vector(labels, fn, "labels", n=n, numeric=False)
    classes = np.unique(arr)
    if len(classes) < 2:
        shown = f" ({classes.tolist()[0]!r})" if len(classes) else ""
        raise MedinterpError(f"{fn} needs at least 2 classes in 'labels'; got {len(classes)}{shown}.")
    if len(classes) > n - 1:
        raise MedinterpError(
            f"{fn} needs at most n_samples-1 = {n - 1} classes in 'labels'; got {len(classes)} "
            "(every sample its own class).")
    return arr
