"""The benchmark's parts: its options, label batches, the kinks search and the PyTorch twin; no timing is asserted.
Its runs end to end are in tests/test_bench.py."""

import argparse
import importlib.util

import numpy as np
import pytest

from imbsam.bench import add_optimizers, kinks, oracle
from imbsam.bench import step as bench
from imbsam.bench.twin import torch_resnet


def test_variant_labels_name_only_what_varies():
    assert bench.variant_labels(("graph",), ("auto",)) == {"": {"mode": "graph", "kernels": "auto"}}
    assert list(bench.variant_labels(("pynative", "graph"), ("onednn", "mindspore"))) == [
        "pynative, onednn", "pynative, mindspore", "graph, onednn", "graph, mindspore"]


@pytest.mark.parametrize("text", ["jit", "auto", ","])
def test_bad_modes_are_rejected(text, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--modes", text])
    assert "pynative,graph" in capsys.readouterr().err


@pytest.mark.parametrize("main", [bench.main, oracle.main])
def test_methods_still_chooses_the_optimizers_after_one_line_naming_its_new_name(main, capsys):
    # --steps 0 stops the run at parsing, after --methods has been read.
    with pytest.raises(SystemExit):
        main(["--methods", "sgd,sam", "--steps", "0"])
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "--methods is deprecated: use --optimizers"
    assert "--steps" in err[-1]
    with pytest.raises(SystemExit):
        main(["--methods", "adam"])
    assert "give a comma-separated subset of" in capsys.readouterr().err


def test_methods_and_optimizers_give_the_same_choice(capsys):
    parser = argparse.ArgumentParser()
    add_optimizers(parser, ("sgd", "sam", "imbsam"), "optimizers")
    assert parser.parse_args([]).optimizers == ("sgd", "sam", "imbsam")
    assert parser.parse_args(["--optimizers", "imbsam,sgd"]).optimizers == ("imbsam", "sgd")
    assert capsys.readouterr().err == ""
    assert parser.parse_args(["--methods", "imbsam,sgd"]).optimizers == ("imbsam", "sgd")
    assert capsys.readouterr().err == "--methods is deprecated: use --optimizers\n"


def test_label_batches_reproduce_the_if100_share_of_tail_free_batches():
    tail = bench.tail_classes()
    assert tail == list(range(70, 100))  # int(500 * 0.01 ** (c / 99)) < 20 from class 70 on
    batches = bench.label_batches(64, 3000)
    measured = np.mean([not np.isin(batch, tail).any() for batch in batches])
    assert measured == pytest.approx(bench.expected_tail_free_fraction(64), abs=0.03)


def test_warm_up_covers_both_imbsam_paths():
    tail = bench.tail_classes()
    warmup = bench.cover_both_imbsam_paths([np.zeros(8, np.int32), np.full(8, 99, np.int32)], tail)
    assert np.isin(warmup[0], tail).any()
    assert not np.isin(warmup[1], tail).any()


@pytest.mark.parametrize("main, argv", [(bench.main, ["--compare-torch"]), (oracle.main, []), (kinks.main, [])])
def test_missing_torch_is_named_with_the_install_command(main, argv, monkeypatch, capsys):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit):
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert "pip install torch==2.13.0" in err[-1]


def test_kinks_keeps_the_flips_that_explain_a_gradient_and_no_more(capsys):
    rng = np.random.default_rng(0)
    exact = rng.normal(size=200)
    candidates = [(1e-7, 3, (0, 1, 2, 3)), (2e-7, 5, (1, 0, 0, 0)), (4e-7, 7, (2, 0, 0, 0))]
    jumps = {c[1:]: rng.normal(size=200) * 0.1 for c in candidates}

    def recompute(flips):
        return exact + sum((jumps[f] for f in flips), np.zeros_like(exact))

    rounding = 1e-7 * rng.normal(size=200)
    float32 = recompute([candidates[0][1:], candidates[2][1:]]) + rounding
    kept, distance = kinks.explain(float32, exact, recompute, candidates)
    assert sorted(kept) == [candidates[0], candidates[2]]
    assert distance < 1e-6
    assert "block 1 inner, sample 0, channel 1, at (2, 3)" in capsys.readouterr().out
    # An update off by 1% is no kink: no flip explains it.
    assert kinks.explain(exact * 1.01, exact, recompute, candidates) == ([], pytest.approx(0.01))


def test_kinks_names_every_relu_of_the_torch_twin():
    torch = pytest.importorskip("torch")  # a benchmark-only extra, not in the requirements
    relu = kinks.FlippableReLU()
    torch_resnet(torch, kinks.ARCH, relu)(torch.zeros(2, 3, 32, 32))
    assert relu.calls == len(kinks.relu_names())


@pytest.mark.parametrize("arch", bench.ARCHS)
def test_torch_twin_has_the_mindspore_network_shape(arch):
    torch = pytest.importorskip("torch")  # a benchmark-only extra, not in the requirements
    from imbsam.models import create_model

    twin = torch_resnet(torch, arch)
    network = create_model(arch)
    assert sorted(tuple(p.shape) for p in twin.parameters()) == sorted(
        tuple(p.shape) for p in network.trainable_params())
