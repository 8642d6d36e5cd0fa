"""The convolution benchmark's oneDNN operator against MindSpore's own gradients, and its table at tiny sizes.

No timing is asserted.
"""

import importlib.util

import pytest

from imbsam.bench import conv as convbench


@pytest.mark.parametrize("batch, in_channels, out_channels, size", [(2, 3, 4, 5), (3, 2, 2, 8)])
def test_onednn_operator_output_and_gradients_match_mindspore(batch, in_channels, out_channels, size):
    convbench.setup_cpu()
    errors = convbench.gradient_errors(*convbench.layer_arrays(batch, in_channels, out_channels, size))
    assert set(errors) == {"output", "input gradient", "weight gradient"}
    assert max(errors.values()) < 1e-5, errors


def test_main_prints_its_table(capsys):
    assert convbench.main(["--shape", "3,4,5", "--batch-size", "2", "--repeats", "1", "--warmup", "1"]) == 0
    printed = capsys.readouterr().out
    rows = ["MindSpore", "oneDNN op"] + (["PyTorch"] if importlib.util.find_spec("torch") else [])
    for text in rows + ["3->4 5x5", "bwd vs MindSpore", "weight gradient", "conclusion"]:
        assert text in printed


def test_a_shape_needs_three_positive_integers(capsys):
    with pytest.raises(SystemExit):
        convbench.main(["--shape", "16,16"])
    assert "CIN,COUT,SIZE" in capsys.readouterr().err
