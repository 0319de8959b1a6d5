"""The sweep keys a real model's rows by the names ``photo_data`` gives its sets (a mismatch
made ``refquant compare efficientnet-lite0`` raise ``KeyError: 'gaussian_noise-3'``)."""

import pytest

from refquant.compare import _set_names, photo_data
from refquant.data.photos import CORRUPTIONS


@pytest.mark.parametrize("severity, corruptions", [(None, None), (2, ("gaussian_noise", "contrast")), (5, ())])
def test_real_model_set_names_are_photo_datas(severity, corruptions):
    names = _set_names("efficientnet-lite0", corruptions, severity)
    picked = CORRUPTIONS if corruptions is None else corruptions
    assert names == ["views", *(f"{c}-{severity or 3}" for c in picked)]
    if corruptions:  # the data function itself, on a small selection
        data = photo_data(1, 1, severity or 3, corruptions, 8)
        assert [name for name, _, _ in data.sets] == names


def test_digits_set_names_are_the_data_modules_without_building_the_sets(monkeypatch):
    import refquant.compare as compare_module
    from refquant.data import SHIFTED_SETS, TEST_SETS, load_digits

    built = [s.name for s in load_digits().test_sets()]
    assert list(TEST_SETS) == built == ["test", *SHIFTED_SETS]

    def no_data(*args, **kwargs):
        raise AssertionError("the set names must not load or build the data")

    monkeypatch.setattr(compare_module, "load_digits", no_data)
    assert _set_names("digits-cnn", None) == built
    assert _set_names("digits-mlp", None, 3) == built
