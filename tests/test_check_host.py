"""`python -m imbsam.check_host` on this CPU, every section real; a deliberately broken update must fail it; a
GPU host's bundle, from this CPU's. Its arguments and the readings only a GPU or Ascend host gives, which need
no run, are in tests/unit/test_check_host.py."""

import copy
import json
import os
import shutil
import socket
import sys

import pytest
from workspace import REPO, git, project_copy, run, show

from imbsam import registry
from imbsam.check_host import markdown, verdict

# Runs the command as `python -m imbsam.check_host` would, then fails if anything imported DVC.
NO_DVC = ("import sys; from imbsam.check_host import main; code = main(sys.argv[1:]); "
          "assert not [m for m in sys.modules if m == 'dvc' or m.startswith('dvc.')], 'imported DVC'; sys.exit(code)")


def tree(folder):
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory, synthetic_archive):
    """The check run in a DVC workspace (the cheap network only, one timed step per row), with what it left."""
    root = project_copy(tmp_path_factory.mktemp("check") / "repo", *synthetic_archive(), {})
    dvc_before = tree(root / ".dvc")
    result = run([sys.executable, "-c", NO_DVC, "--archs", "resnet32", "--steps", "1"], root)
    bundle_dir = root / "host-check"
    return {"root": root, "result": result, "dvc_before": dvc_before, "dir": bundle_dir,
            "bundle": json.loads((bundle_dir / "host-check.json").read_text()) if bundle_dir.is_dir() else None}


def test_every_section_runs_and_passes_on_the_cpu(cpu_check):
    result, bundle = cpu_check["result"], cpu_check["bundle"]
    assert result.returncode == 0, show(result)
    last = result.stdout.strip().splitlines()
    assert last[-2].startswith("PASS: focal_sam, imbsam, sam, sgd, sse_sam give the authors' update in graph and "
                               "PyNative mode on CPU")
    assert "the quick run" in last[-2] and "host-check.md" in last[-1]
    assert bundle["device"]["target"] == "CPU" and bundle["host"]["run_check"]["passed"]
    assert "plugin/libmindspore_ops_cpu.so" in bundle["host"]["plugins"]

    results = bundle["correctness"]["results"]
    variants = {"sgd": [""], "sam": ["rho=0.05", "rho=0.5"], "imbsam": ["rho=0.05", "rho=0.5"],
                "focal_sam": ["rho=0.05", "rho=0.05 adaptive", "rho=0.5", "rho=0.5 adaptive"],
                "sse_sam": ["rho=0.05", "rho=0.5"]}
    assert set(variants) == set(registry.names("optimizers"))
    expected = {(name, variant, mode) for name, names in variants.items() for variant in names
                for mode in ("graph", "pynative")}
    assert {(r["method"], r["variant"], r["mode"]) for r in results} == expected
    assert all(r["passed"] and r["worst"] < 1e-4 for r in results), results

    figures = bundle["speed"]["figures"]
    assert set(figures) == {"resnet32"}
    rows = figures["resnet32"]["rows"]
    assert set(rows) == {*registry.names("optimizers"), "evaluate"}
    assert all(row["img_per_s"] > 0 and row["peak_rss_mib"] > 100 for row in rows.values()), rows
    quick = bundle["speed"]["estimates"]["quick"]
    assert "paper" not in bundle["speed"]["estimates"]  # its network, ResNet-34, was not measured
    # The quick run trains params.yaml's optimizers, the paper's three.
    assert set(quick["runs"]) == {"sgd", "sam", "imbsam"}
    assert quick["one_device_s"] == pytest.approx(sum(quick["runs"].values()))
    # 2 epochs of 20 steps of 64 at the measured speed, plus the test passes and the first step's compile.
    sgd = rows["sgd"]
    floor = 2 * 20 * 64 / sgd["img_per_s"] + 2 * 10_000 / rows["evaluate"]["img_per_s"]
    assert quick["runs"]["sgd"] == pytest.approx(floor + sgd["compile_s"])


def test_the_bundle_reads_as_an_attachment_and_holds_no_personal_data(cpu_check):
    report = (cpu_check["dir"] / "host-check.md").read_text()
    for heading in ("# imbsam host check", "## Host", "## Correctness", "## Speed"):
        assert heading in report
    assert report.splitlines()[2] == f"**{cpu_check['bundle']['verdict']}**"
    assert "| sgd " in report and "| evaluate " in report and "imbsam rho=0.5 (pynative)" in report
    for text in (report, (cpu_check["dir"] / "host-check.json").read_text()):
        assert str(cpu_check["root"]) not in text and str(REPO) not in text
        assert socket.gethostname() not in text
        home = os.path.expanduser("~")
        assert home in ("/", "/root") or home not in text


def test_the_dvc_workspace_and_cache_are_left_alone(cpu_check):
    root = cpu_check["root"]
    assert tree(root / ".dvc") == cpu_check["dvc_before"]
    assert git(root, "status", "--porcelain").stdout == ""  # the bundle's folder is ignored
    assert not (root / "data").exists() and not (root / "dvc.lock").exists()


MUTATIONS = {
    # ImbSAM's tail loss without its factor 2
    "imbsam": ("tail_loss_scale / len(labels_np)", "1.0 / len(labels_np)"),
    # SAM stepping on the gradient at w instead of at w + eps
    "sam": ("parts.update(perturbed, perturbation=eps)", "parts.update(grads, perturbation=eps)"),
}


@pytest.mark.parametrize("broken", sorted(MUTATIONS))
def test_a_broken_update_fails_the_check(tmp_path, broken):
    shutil.copytree(REPO / "imbsam", tmp_path / "imbsam", ignore=shutil.ignore_patterns("__pycache__"))
    module = tmp_path / "imbsam" / "optimizers" / f"{broken}.py"
    original, mutated = MUTATIONS[broken]
    assert module.read_text().count(original) == 1
    module.write_text(module.read_text().replace(original, mutated))
    # python -m puts the working directory first on sys.path: the mutated copy is the imbsam imported.
    result = run([sys.executable, "-m", "imbsam.check_host", "--sections", "correctness", "--out", "out"], tmp_path)
    assert result.returncode == 1, show(result)
    line = result.stdout.strip().splitlines()[-2]
    assert line.startswith(f"FAIL: on CPU the update differs from the reference: {broken} rho=0.05 (graph)"), line
    results = json.loads((tmp_path / "out" / "host-check.json").read_text())["correctness"]["results"]
    assert all(r["passed"] == (r["method"] != broken) for r in results), results


def test_a_gpu_bundle_reports_device_memory_and_its_gpus(cpu_check):
    bundle = copy.deepcopy(cpu_check["bundle"])
    bundle["device"]["target"] = "GPU"
    bundle["host"]["gpus"] = [{"index": "0", "name": "NVIDIA H100 80GB HBM3", "driver": "550.127.05",
                               "compute_capability": "9.0", "runs": "through PTX JIT", "why": "no Hopper code"}]
    bundle["host"]["cuda"] = {"driver_supports": "12.4", "libraries": {"nvidia-cudnn-cu11": "8.9.6.50"},
                              "cuda_home": True}
    for row in bundle["speed"]["figures"]["resnet32"]["rows"].values():
        row["peak_device_mib"] = 1234.0
    passed, line = verdict(bundle)
    assert passed and "on GPU" in line
    report = markdown({**bundle, "verdict": line})
    assert "1234 MiB on the device" in report
    assert "GPU 0: NVIDIA H100 80GB HBM3, compute capability 9.0, driver 550.127.05: runs through PTX JIT" in report
    assert "CUDA: the driver supports 12.4; libraries: nvidia-cudnn-cu11 8.9.6.50" in report

    bundle["host"]["run_check"]["passed"] = False
    passed, line = verdict(bundle)
    assert not passed
    assert line == "FAIL: mindspore.run_check() did not pass on this device (its output is in the bundle)"
