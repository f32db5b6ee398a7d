"""Run-level settings fail in one line before any work (medinterp/validation.py, select_templates, Cell)."""
from __future__ import annotations

import pytest

from medinterp.capture.cache import cached_activations
from medinterp.cell import Cell
from medinterp.errors import MedinterpError
from medinterp.methods import method_class, select_templates
from medinterp.prompts import load_prompt_set


@pytest.mark.parametrize("settings, message", [
    (dict(batch_size=0, seed=0), "The 'batch_size' setting must be a positive integer; got 0."),
    (dict(batch_size="8", seed=0), "The 'batch_size' setting must be a positive integer; got '8'."),
    (dict(batch_size=True, seed=0), "The 'batch_size' setting must be a positive integer; got True."),
    (dict(batch_size=8, seed="abc"), "The 'seed' setting must be an integer in [0, 2**32); got 'abc'."),
    (dict(batch_size=8, seed=-1), "The 'seed' setting must be an integer in [0, 2**32); got -1."),
    (dict(batch_size=8, seed=0, batch_tokens=0),
     "The 'batch_tokens' setting must be a positive integer or null; got 0."),
])
def test_bad_run_settings_are_one_line(settings, message):
    from medinterp.validation import check_run_settings

    with pytest.raises(MedinterpError) as err:
        check_run_settings(**settings)
    assert str(err.value) == message


def test_good_run_settings_pass():
    from medinterp.validation import check_run_settings

    check_run_settings(batch_size=1, seed=2**32 - 1, batch_tokens=None)


def test_an_empty_template_list_is_one_line():
    ps = load_prompt_set("drugs")
    with pytest.raises(MedinterpError) as err:
        select_templates(ps, [])
    ids = ", ".join(t.id for t in ps.templates)
    assert str(err.value) == (f"The 'templates' setting must be 'all', a number 1..{len(ids.split(', '))} or a "
                              f"non-empty list of template ids of domain 'drugs' ({ids}); got [].")


def test_a_numpy_integer_count_of_templates_picks_the_first_n():
    """``templates`` is checked with is_int: a numpy integer (e.g. from an array of counts) is a count too (the
    hand-written ``isinstance(templates, int)`` sent it to ``list()``, a TypeError traceback)."""
    import numpy as np

    ps = load_prompt_set("drugs")
    assert select_templates(ps, np.int64(2)) == [t.id for t in ps.templates[:2]] == select_templates(ps, 2)
    for bad in (True, 1.5):  # neither a count nor ids: one line (it was a TypeError traceback)
        with pytest.raises(MedinterpError, match=rf"The 'templates' setting must be 'all', .*; got {bad}\.$"):
            select_templates(ps, bad)


class _MustNotRun:
    """A method that fails the test if the driver gets as far as preparing it."""

    name = "stub"

    def prepare(self, *_args, **_kwargs):
        raise AssertionError("the cell was run with batch_size=0")


@pytest.mark.parametrize("batch_size", [0, -3])
def test_batch_size_is_checked_when_the_activation_cache_is_warm(tiny_handles, tmp_path, batch_size):
    """Every activation is cached, so nothing is batched; batch_size<=0 was accepted (and recorded) anyway."""
    h, ps = tiny_handles["llama"], load_prompt_set("drugs")
    t = ps.templates[0].id
    cached_activations(h, ps, t, cache_dir=tmp_path)  # warm
    with pytest.raises(MedinterpError, match=rf"The 'batch_size' setting must be a positive integer; got {batch_size}\."):
        Cell(h, ps, _MustNotRun(), (t,), batch_size=batch_size, cache_dir=tmp_path)


def test_one_integer_and_number_test_for_every_check():
    import numpy as np

    from medinterp.validation import is_int, is_number

    assert [is_int(v) for v in (3, np.int64(3), True, 3.0, "3", None)] == [True, True, False, False, False, False]
    assert [is_number(v) for v in (3, 0.5, np.float32(0.5), np.int8(2), False, "1", None)] == \
        [True, True, True, True, False, False, False]


@pytest.mark.parametrize("name, settings, message", [
    ("saliency", dict(n_boot=0), "saliency method: n_boot must be an integer >= 1; got 0"),
    ("saliency", dict(max_prompts="all"), "saliency method: max_prompts must be an integer >= 1 or null (all); got 'all'"),
    ("geometry", dict(n_folds=1), "geometry method: n_folds must be an integer >= 2; got 1"),
    ("geometry", dict(max_rows=True), "geometry method: max_rows must be an integer >= 2 or null (no cap); got True"),
    ("neurons", dict(top_k=1.5), "neurons method: top_k must be an integer >= 1; got 1.5"),
    ("gradcam", dict(n_figures=-1), "gradcam method: n_figures must be an integer >= 0; got -1"),
    ("image_lens", dict(max_prompts=0), "image_lens method: max_prompts must be an integer >= 1 or null (all); got 0"),
])
def test_a_bad_method_setting_is_one_line_naming_it(name, settings, message):
    """Every method's integer settings go through validation.check_int_settings (bools and floats refused)."""
    with pytest.raises(MedinterpError) as err:
        method_class(name)(**settings)
    assert str(err.value) == message


@pytest.mark.parametrize(("name", "nulls"), [("saliency", ["max_prompts"]), ("geometry", ["max_rows", "lens_max_prompts"]),
                                             ("neurons", ["max_prompts"]), ("gradcam", ["max_prompts"]),
                                             ("image_lens", ["max_prompts"])])
def test_null_counts_and_the_defaults_pass(name, nulls):
    method = method_class(name)(**dict.fromkeys(nulls))
    assert all(getattr(method, key) is None for key in nulls)
