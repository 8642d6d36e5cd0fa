"""The benchmark runs end to end at minimal sizes and prints its table; no timing is asserted.
Each run builds and times ResNet-32 (seconds to tens of seconds); its parts' tests are in
tests/unit/test_bench.py."""

import json

from imbsam.bench import step as bench


def test_bench_prints_its_table_and_writes_the_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(["--device", "CPU", "--batch-size", "4", "--steps", "1", "--warmup", "2", "--rounds", "1",
                       "--optimizers", "imbsam", "--modes", "pynative", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for text in ("forward+backward", "imbsam", "input pipeline", "x floor", "compile s", "peak RSS MiB",
                 "tail-free share", "CPU pynative mode"):
        assert text in printed
    figures = json.loads(out.read_text())
    assert set(figures["rows"]) == {"forward", "forward+backward", "imbsam", "input pipeline"}
    assert figures["rows"]["imbsam"]["x_floor"] > 0
    assert 0 <= figures["rows"]["imbsam"]["compile_s"] <= figures["rows"]["imbsam"]["first_step_s"]


def test_bench_sets_both_execution_modes_side_by_side(tmp_path):
    out = tmp_path / "bench.json"
    code = bench.main(["--device", "CPU", "--batch-size", "4", "--steps", "1", "--warmup", "2", "--rounds", "1",
                       "--optimizers", "sgd", "--json", str(out)])
    assert code == 0
    figures = json.loads(out.read_text())
    assert figures["config"]["modes"] == ["pynative", "graph"]
    for mode in ("pynative", "graph"):
        assert figures["rows"][f"sgd [{mode}]"]["floor_ms"] == figures["rows"][f"forward+backward [{mode}]"][
            "ms_per_step"]


def test_bench_sets_both_convolution_kernels_side_by_side(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(["--device", "CPU", "--batch-size", "4", "--steps", "1", "--warmup", "2", "--rounds", "1",
                       "--optimizers", "sgd", "--modes", "graph", "--kernels", "onednn,mindspore", "--json", str(out)])
    assert code == 0
    figures = json.loads(out.read_text())
    assert figures["config"]["kernels"] == ["onednn", "mindspore"]
    assert {"sgd [onednn]", "sgd [mindspore]", "forward [onednn]", "forward+backward [mindspore]"} <= set(
        figures["rows"])
    assert "graph mode, onednn and mindspore kernels" in capsys.readouterr().out


def test_the_curvature_bench_sets_a_product_beside_a_train_step():
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run([sys.executable, "-m", "imbsam.bench.curvature", "--arch", "resnet32", "--batch-size",
                             "4", "--products", "1", "--steps", "1"], cwd=Path(__file__).resolve().parent.parent,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("resnet32, 470,004 parameters"), result.stdout
    assert "ms per image" in lines[1] and "x the step" in lines[2], result.stdout
    assert "one run's analysis at analysis.* (3 groups x 128 images x 72 products)" in lines[4], result.stdout
