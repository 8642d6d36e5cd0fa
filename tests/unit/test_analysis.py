"""imbsam.analysis against exact Hessians: the precision contract of the mechanism stage's curvature.

The oracle shares no code with imbsam.analysis: the two small networks (an MLP with BatchNorm, a convolutional net
with BatchNorm) are written again in NumPy float64 from the MindSpore Cells' weights, and the exact Hessian is the
second difference of that loss. Its ReLU masks are frozen at w, so the differences see the function the double
backpropagation differentiates (ReLU'' = 0, the active set of w) and never straddle a kink, however close to 0 a
pre-activation lies.
"""

import numpy as np
import pytest

SAMPLES, CLASSES = 24, 5


class Oracle:
    """The mean cross-entropy of a NumPy float64 replica of `kind`, as a function of its flat parameters."""

    def __init__(self, kind, cell, images, labels):
        self.kind, self.images, self.labels = kind, np.asarray(images, np.float64), labels
        self.names = [p.name for p in cell.trainable_params()]
        self.shapes = [tuple(p.shape) for p in cell.trainable_params()]
        self.w = np.concatenate([p.asnumpy().astype(np.float64).ravel() for p in cell.trainable_params()])
        self.stats = {p.name: p.asnumpy().astype(np.float64) for p in cell.get_parameters() if not p.requires_grad}
        self.masks = None
        self.masks = self._forward(self.w, record=True)[1]

    def _unpack(self, w):
        pieces = np.split(w, np.cumsum([int(np.prod(s)) for s in self.shapes])[:-1])
        return {name: piece.reshape(shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}

    def _stat(self, suffix):
        return next(value for name, value in self.stats.items() if name.endswith(suffix))

    def _relu(self, x, index, record, masks):
        mask = x > 0 if record or self.masks is None else self.masks[index]
        masks.append(mask)
        return np.where(mask, x, 0.0)

    def _forward(self, w, record=False, frozen=True):
        p, masks = self._unpack(w), []
        saved = self.masks
        if not frozen:
            self.masks = None
        x = self.images
        mean, var = self._stat("moving_mean"), self._stat("moving_variance")
        gamma, beta = (next(v for k, v in p.items() if k.endswith(s)) for s in ("gamma", "beta"))
        if self.kind == "mlp":
            h = x @ p["fc1.weight"].T + p["fc1.bias"]
            h = gamma * (h - mean) / np.sqrt(var + 1e-5) + beta
            h = self._relu(h, 0, record, masks)
        else:
            padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
            size = x.shape[-1]
            patches = np.stack([padded[:, :, i:i + size, j:j + size] for i in range(3) for j in range(3)], axis=2)
            kernel = p["conv.weight"].reshape(*p["conv.weight"].shape[:2], 9)
            h = np.einsum("ncpyx,ocp->noyx", patches, kernel)
            h = (gamma[:, None, None] * (h - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
                 + beta[:, None, None])
            h = self._relu(h, 0, record, masks).mean(axis=(2, 3))
        logits = h @ p["fc2.weight"].T + p["fc2.bias"]
        self.masks = saved
        top = logits.max(axis=1, keepdims=True)
        losses = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0] - logits[np.arange(len(logits)), self.labels]
        return losses.mean(), masks

    def loss(self, w, frozen=True):
        return self._forward(w, frozen=frozen)[0]

    def gradient(self, h=1e-5):
        eye = np.eye(len(self.w)) * h
        return np.array([(self.loss(self.w + e) - self.loss(self.w - e)) / (2 * h) for e in eye])

    def hessian(self, h=1e-4):
        n = len(self.w)
        eye = np.eye(n) * h
        hessian = np.empty((n, n))
        for i in range(n):
            for j in range(i, n):
                hessian[i, j] = hessian[j, i] = (
                    self.loss(self.w + eye[i] + eye[j]) - self.loss(self.w + eye[i] - eye[j])
                    - self.loss(self.w - eye[i] + eye[j]) + self.loss(self.w - eye[i] - eye[j])) / (4 * h * h)
        return hessian


def _network(kind, seed):
    import mindspore as ms
    from mindspore import nn

    rng = np.random.default_rng(seed)

    class MLP(nn.Cell):
        def __init__(self):
            super().__init__()
            self.fc1, self.bn, self.fc2 = nn.Dense(8, 7), nn.BatchNorm1d(7), nn.Dense(7, CLASSES)

        def construct(self, x):
            return self.fc2(self.bn(self.fc1(x)).clamp(0.0))

    class ConvNet(nn.Cell):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, pad_mode="pad", padding=1, has_bias=False)
            self.bn, self.fc2 = nn.BatchNorm2d(3), nn.Dense(3, CLASSES)

        def construct(self, x):
            return self.fc2(self.bn(self.conv(x)).clamp(0.0).mean(axis=(2, 3)))

    cell = MLP() if kind == "mlp" else ConvNet()
    for parameter in cell.get_parameters():
        value = rng.normal(0.0, 0.6, parameter.shape)
        if "variance" in parameter.name:
            value = rng.uniform(0.5, 2.0, parameter.shape)
        elif "gamma" in parameter.name:
            value = rng.uniform(0.5, 1.5, parameter.shape)
        parameter.set_data(ms.Tensor(value.astype(np.float32)))
    cell.set_train(False)
    shape = (SAMPLES, 8) if kind == "mlp" else (SAMPLES, 2, 4, 4)
    images = rng.normal(0.0, 1.0, shape).astype(np.float32)
    labels = rng.integers(0, CLASSES, SAMPLES)
    return cell, images, labels


@pytest.fixture(scope="module", params=["mlp", "conv"])
def case(request):
    cell, images, labels = _network(request.param, seed=3)
    oracle = Oracle(request.param, cell, images, labels)
    hessian = oracle.hessian()
    return cell, images, labels, oracle, hessian, np.linalg.eigvalsh(hessian)


def test_the_oracle_is_the_networks_loss(case):
    import mindspore as ms

    from imbsam.analysis import cross_entropy

    cell, images, labels, oracle, hessian, _ = case
    logits = cell(ms.Tensor(images))
    onehot = ms.Tensor(np.eye(CLASSES, dtype=np.float32)[labels])
    assert float(cross_entropy(logits, onehot).mean().asnumpy()) == pytest.approx(oracle.loss(oracle.w), rel=1e-5)
    assert np.allclose(hessian, hessian.T)


def test_eigenvalue_of_largest_magnitude_within_1_percent(case):
    from imbsam.analysis import hessian_eigenvalue

    cell, images, labels, _, _, eigenvalues = case
    exact = eigenvalues[np.argmax(np.abs(eigenvalues))]
    # batch_size 10: three unequal batches, averaged by size
    found = hessian_eigenvalue(cell, images, labels, batch_size=10)
    assert found == pytest.approx(exact, rel=0.01)


def test_lanczos_extremes_within_2_percent(case):
    from imbsam.analysis import hessian_density

    cell, images, labels, _, _, eigenvalues = case
    assert eigenvalues[0] < -0.02 * eigenvalues[-1], "the case must have a saddle for lambda_min to be tested"
    nodes, weights = hessian_density(cell, images, labels, steps=30, runs=3)
    assert nodes.shape == weights.shape == (3, 30)
    assert np.allclose(weights.sum(axis=1), 1.0)
    assert nodes.max() == pytest.approx(eigenvalues[-1], rel=0.02)
    assert nodes.min() == pytest.approx(eigenvalues[0], rel=0.02)


def test_hutchinson_trace_and_its_standard_error(case):
    from imbsam.analysis import hessian_trace

    cell, images, labels, _, hessian, _ = case
    samples = 100
    trace, stderr = hessian_trace(cell, images, labels, samples=samples, seed=1)
    off_diagonal = hessian - np.diag(np.diag(hessian))
    exact_stderr = np.sqrt(2 * (off_diagonal ** 2).sum() / samples)
    assert 0.75 < stderr / exact_stderr < 1.33
    assert abs(trace - np.trace(hessian)) < 4 * exact_stderr


def test_density_moments_are_the_trace_and_the_frobenius_norm(case):
    from imbsam.analysis import hessian_density

    cell, images, labels, _, hessian, _ = case
    n, runs = len(hessian), 24
    nodes, weights = hessian_density(cell, images, labels, steps=6, runs=runs, seed=5)
    # One run's moments are z.Az / n for its Rademacher start z, A = H or H^2 (six Gauss nodes are exact up to
    # degree 11): mean tr(A) / n, variance 2 * (sum of A's squared off-diagonal entries) / n^2.
    for moment, matrix in ((1, hessian), (2, hessian @ hessian)):
        estimates = (weights * nodes ** moment).sum(axis=1)
        off_diagonal = matrix - np.diag(np.diag(matrix))
        stderr = np.sqrt(2 * (off_diagonal ** 2).sum() / runs) / n
        assert abs(estimates.mean() - np.trace(matrix) / n) < 4 * stderr, moment


def test_rho_sharpness_within_2_percent(case):
    from imbsam.analysis import rho_sharpness

    cell, images, labels, oracle, _, _ = case
    before = [p.asnumpy().copy() for p in cell.trainable_params()]
    gradient = oracle.gradient()
    rho = 0.05
    exact = oracle.loss(oracle.w + rho * gradient / np.linalg.norm(gradient), frozen=False) - oracle.loss(oracle.w)
    assert rho_sharpness(cell, images, labels, rho) == pytest.approx(exact, rel=0.02)
    assert all(np.array_equal(p.asnumpy(), b) for p, b in zip(cell.trainable_params(), before))


def test_a_run_whose_products_are_not_finite_gets_no_curvature_and_says_why():
    from types import SimpleNamespace

    from imbsam.mechanism import curvature_of

    class Overflowing:
        size, samples = 4, 2

        def hvp(self, vector):
            return np.full(self.size, np.inf)

    settings = SimpleNamespace(lanczos_runs=2, lanczos_steps=3, hutchinson_samples=2, rho=0.05)
    said = []
    figures = curvature_of(Overflowing(), settings, 0, said.append)
    assert figures["lambda_max"] is None and figures["trace"] is None and figures["samples"] == 2
    assert "not finite" in figures["curvature_error"]
    assert said == ["no curvature: a Hessian-vector product is not finite"]
