"""A new optimizer is one row in imbsam/methods.py, one step function in imbsam/optim.py and one group in
params.yaml: a throwaway one, added to a copy of the project exactly so, runs through a real `dvc repro`
(nothing else changed: not dvc.yaml, not the stages, not the report) and gets its row in the report."""

import json
import re

from workspace import dvc, ok, project_copy, ran_stages, show

ROW = '''

class ToyParams(MethodParams):
    scale: float = Field(0.5, gt=0, description="the factor of the mean loss's gradient")


METHODS["toy"] = Method("toy", "Toy", ToyParams, "imbsam.optim:toy", "a test's")
'''
STEP = '''

def toy(parts, scale=0.5):
    """SGD on the gradient of scale * the mean loss."""
    def step(images, labels):
        loss, (grads,) = parts.gradients(images, labels, parts.uniform(labels) * scale)
        parts.update(grads)
        return loss

    return step
'''


def test_a_throwaway_optimizer_is_a_row_a_step_and_a_group(tmp_path, synthetic_archive):
    archive, md5 = synthetic_archive(train_per_class=20, test_per_class=5)
    root = project_copy(tmp_path / "repo", archive, md5, {
        "model.arch": "resnet32", "train.optimizers": ["sgd", "toy"], "train.seeds": [0], "train.epochs": 1,
        "train.max_steps_per_epoch": 2, "train.batch_size": 32, "train.schedule": "step_cosine",
        "toy.scale": 0.25})
    for module, code in (("methods", ROW), ("optim", STEP)):
        path = root / "imbsam" / f"{module}.py"
        path.write_text(path.read_text() + code)

    result = ok(dvc(root, "repro"))
    assert {"train@toy-0", "evaluate@toy-0", "report"} <= set(ran_stages(result)), show(result)
    trained = json.loads((root / "runs" / "toy-0" / "train.json").read_text())
    assert trained["config"]["method_params"] == {"scale": 0.25}
    assert trained["history"][0]["train/loss"] > 0
    report = (root / "reports" / "report.md").read_text()
    assert re.search(r"^\| Toy +\|", report, re.MULTILINE), report
    assert set(json.loads((root / "reports" / "metrics.json").read_text())) == {"sgd", "toy"}
