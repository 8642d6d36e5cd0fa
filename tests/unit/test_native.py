"""imbsam.kernels.native: the C sources are compiled once per version, into the user's cache, or the error
names the fix."""

import pytest

from imbsam.kernels import native


def test_without_a_c_compiler_the_error_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing built yet
    monkeypatch.setattr(native.sysconfig, "get_config_var", lambda name: "no-such-cc" if name == "CC" else None)
    with pytest.raises(native.BuildError, match="could not compile batchnorm.c .*install a C compiler"):
        native.build.__wrapped__("batchnorm.c")
    assert not list(tmp_path.rglob("*.so"))


@pytest.mark.parametrize("source", ["onednn_shim.c", "batchnorm.c"])
def test_each_source_is_built_once_per_version(monkeypatch, tmp_path, source):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built = native.build.__wrapped__(source)
    assert built.startswith(str(tmp_path / "imbsam" / source.removesuffix(".c")))
    assert native.build.__wrapped__(source) == built
    assert len(list((tmp_path / "imbsam").iterdir())) == 1
