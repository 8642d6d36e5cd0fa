"""The curvature of a trained network's loss, as PyHessian (Yao et al. 2020) and Saddle-LongTail (Rangwani et al.
2022) measure it: Hessian-vector products by double backpropagation, and the eigenvalues, trace and spectral
density that power iteration, Hutchinson's estimator and stochastic Lanczos quadrature read from them.

`network` is a MindSpore Cell the caller has set to eval mode (BatchNorm on its running statistics); `images` are
its inputs (float32, already normalised), `labels` their integer classes. Every quantity is of the mean loss over
the given samples, with respect to every trainable parameter (BatchNorm's scale and shift included), without a
weight-decay term; the samples are taken in batches of `batch_size` and their Hessian-vector products averaged by
batch size, so the figures do not depend on it beyond float32 rounding. `loss_fn(logits, onehot)` returns each
sample's loss; None is `cross_entropy`.
"""

import copy
from contextlib import contextmanager

import mindspore as ms
import numpy as np
from mindspore import nn, ops

DEFAULT_BATCH_SIZE = 256


def cross_entropy(logits, onehot):
    """Each sample's cross-entropy, from exp, log and a one-hot product: MindSpore 2.10 has no second derivative
    through nn.CrossEntropyLoss or ops.log_softmax (docs/mindspore.md). The max is held by stop_gradient, so it
    only guards exp against overflow."""
    shifted = logits - ops.stop_gradient(logits.max(axis=1, keepdims=True))
    return ops.log(ops.exp(shifted).sum(axis=1)) - (shifted * onehot).sum(axis=1)


class _MeanLoss(nn.Cell):
    def __init__(self, network, per_sample):
        super().__init__()
        self.network, self.per_sample = network, per_sample

    def construct(self, x, onehot):
        return self.per_sample(self.network(x), onehot).mean()


class _Gradient(nn.Cell):
    def __init__(self, loss, weights):
        super().__init__()
        self.loss, self.weights = loss, weights
        self.grad = ops.GradOperation(get_by_list=True)

    def construct(self, x, onehot):
        return self.grad(self.loss, self.weights)(x, onehot)


class _Directional(nn.Cell):
    """g(w) . v, whose gradient with respect to w is H v."""

    def __init__(self, gradient):
        super().__init__()
        self.gradient = gradient

    def construct(self, x, onehot, vector):
        gradients = self.gradient(x, onehot)
        total = 0.0
        for i in range(len(gradients)):
            total = total + (gradients[i] * vector[i]).sum()
        return total


class _HessianVector(nn.Cell):
    def __init__(self, directional, weights):
        super().__init__()
        self.directional, self.weights = directional, weights
        self.grad = ops.GradOperation(get_by_list=True)

    def construct(self, x, onehot, vector):
        return self.grad(self.directional, self.weights)(x, onehot, vector)


@contextmanager
def _graph_mode():
    """The context in graph mode for a call: in PyNative, MindSpore 2.10's nested GradOperation returns wrong
    Hessian-vector products (off by the entries' own size, not symmetric); compiled they match float64 to 3e-7.
    Switching the context compiled ResNet-32's product in 14 s where ms.jit took 24 s, and ran it no slower."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=previous)


class Curvature:
    """The mean loss of `network` over fixed samples, its gradient and its Hessian-vector products, on flat float64
    vectors over the trainable parameters."""

    def __init__(self, network, images, labels, *, loss_fn=None, batch_size=DEFAULT_BATCH_SIZE):
        self.parameters = network.trainable_params()
        self.shapes = [tuple(p.shape) for p in self.parameters]
        self.sizes = [int(np.prod(shape)) for shape in self.shapes]
        self.size = sum(self.sizes)
        self.network, self.batch_size = network, batch_size
        weights = ms.ParameterTuple(self.parameters)
        self._loss = _MeanLoss(network, loss_fn or cross_entropy)
        self._gradient = _Gradient(self._loss, weights)
        self._hvp = _HessianVector(_Directional(self._gradient), weights)
        self._use(images, labels)

    def _use(self, images, labels):
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(images) != len(labels) or not len(labels):
            raise ValueError(f"{len(images)} images for {len(labels)} labels: both must be equal and non-zero")
        self.samples = len(labels)
        classes = int(np.prod(self.network(ms.Tensor(np.asarray(images[:1], dtype=np.float32))).shape[1:]))
        onehot = np.eye(classes, dtype=np.float32)[labels]
        size = self.batch_size
        self.batches = [
            (ms.Tensor(np.asarray(images[start:start + size], dtype=np.float32)),
             ms.Tensor(onehot[start:start + size]), len(labels[start:start + size]) / len(labels))
            for start in range(0, len(labels), size)
        ]

    def on(self, images, labels):
        """The same network's curvature over other samples, sharing this one's compiled graphs (a new Curvature
        compiles its Hessian-vector product again: 14 s for ResNet-32 here)."""
        other = copy.copy(self)
        other._use(images, labels)
        return other

    def _flat(self, tensors):
        return np.concatenate([np.asarray(t.asnumpy(), dtype=np.float64).reshape(-1) for t in tensors])

    def _split(self, vector):
        pieces = np.split(np.asarray(vector, dtype=np.float32), np.cumsum(self.sizes)[:-1])
        # mutable: a tuple of tensors is otherwise a constant of the compiled graph, compiled again for every vector
        return ms.mutable(tuple(ms.Tensor(piece.reshape(shape)) for piece, shape in zip(pieces, self.shapes)))

    def loss(self):
        return float(sum(weight * float(self._loss(x, onehot).asnumpy()) for x, onehot, weight in self.batches))

    def gradient(self):
        return sum(weight * self._flat(self._gradient(x, onehot)) for x, onehot, weight in self.batches)

    def hvp(self, vector):
        """H v for a flat vector v (float32 on the way in, as the parameters are; float64 out)."""
        tensors = self._split(vector)
        with _graph_mode():
            return sum(weight * self._flat(self._hvp(x, onehot, tensors)) for x, onehot, weight in self.batches)

    def weights(self):
        return self._flat(self.parameters)

    def set_weights(self, vector):
        for parameter, value in zip(self.parameters, self._split(vector)):
            parameter.set_data(value)


def power_iteration(hvp, size, *, max_iter=100, tol=1e-3, seed=0):
    """The eigenvalue of largest magnitude, sign kept (PyHessian's eigenvalues(): a Gaussian start, stopping when
    the Rayleigh quotient changes by less than tol relative)."""
    vector = np.random.default_rng(seed).standard_normal(size)
    vector /= np.linalg.norm(vector)
    eigenvalue = None
    for _ in range(max_iter):
        product = hvp(vector)
        previous, eigenvalue = eigenvalue, float(vector @ product)
        norm = np.linalg.norm(product)
        if norm == 0.0:
            return 0.0
        vector = product / norm
        if previous is not None and abs(eigenvalue - previous) <= tol * (abs(previous) + 1e-6):
            break
    return eigenvalue


def hutchinson(hvp, size, *, samples=100, seed=0):
    """(mean, standard error) of v.Hv over `samples` Rademacher vectors v: the trace and its uncertainty."""
    rng = np.random.default_rng(seed)
    values = np.array([v @ hvp(v) for v in (rng.choice((-1.0, 1.0), size) for _ in range(samples))])
    stderr = float(values.std(ddof=1) / np.sqrt(samples)) if samples > 1 else float("nan")
    return float(values.mean()), stderr


def lanczos(hvp, size, *, steps, seed=0):
    """(nodes, weights) of one stochastic Lanczos quadrature run from a normalised Rademacher start: the Ritz values
    of `steps` Lanczos steps and the squared first components of their eigenvectors (weights summing to 1).

    Full reorthogonalisation against the stored basis (PyHessian's choice), kept in float32: `steps` vectors of
    the network's size, 1.4 GB for ResNet-34 at 16 steps. A Krylov space exhausted before `steps` (possible only
    for tiny networks) leaves the remaining nodes at the last Ritz value with weight 0."""
    steps = int(steps)
    basis = np.empty((min(steps, size), size), dtype=np.float32)
    vector = np.random.default_rng(seed).choice((-1.0, 1.0), size) / np.sqrt(size)
    alphas, betas = [], []
    for k in range(len(basis)):
        basis[k] = vector
        product = hvp(vector)
        alpha = float(vector @ product)
        alphas.append(alpha)
        product -= alpha * vector
        if betas:
            product -= betas[-1] * basis[k - 1]
        # Twice, as "twice is enough" (Parlett) keeps the basis orthogonal; in float32 throughout, since a
        # float64 product would make NumPy copy the whole basis to float64 (3.4 GB for ResNet-34 at 20 steps).
        for _ in range(2):
            product -= basis[:k + 1].T @ (basis[:k + 1] @ product.astype(np.float32))
        beta = float(np.linalg.norm(product))
        if k + 1 == len(basis) or beta <= 1e-8 * max(abs(a) for a in alphas):
            break
        betas.append(beta)
        vector = product / beta
    tridiagonal = np.diag(alphas) + np.diag(betas[:len(alphas) - 1], 1) + np.diag(betas[:len(alphas) - 1], -1)
    nodes, vectors = np.linalg.eigh(tridiagonal)
    weights = vectors[0] ** 2
    padding = steps - len(nodes)
    return (np.concatenate([nodes, np.full(padding, nodes[-1])]),
            np.concatenate([weights / weights.sum(), np.zeros(padding)]))


def hessian_eigenvalue(network, images, labels, *, loss_fn=None, max_iter=100, tol=1e-3, seed=0,
                       batch_size=DEFAULT_BATCH_SIZE):
    """The Hessian's eigenvalue of largest magnitude, sign kept, by power iteration (PyHessian's eigenvalues())."""
    curvature = Curvature(network, images, labels, loss_fn=loss_fn, batch_size=batch_size)
    return power_iteration(curvature.hvp, curvature.size, max_iter=max_iter, tol=tol, seed=seed)


def hessian_trace(network, images, labels, *, loss_fn=None, samples=100, seed=0, batch_size=DEFAULT_BATCH_SIZE):
    """(trace, standard error) by Hutchinson's estimator with `samples` Rademacher vectors."""
    curvature = Curvature(network, images, labels, loss_fn=loss_fn, batch_size=batch_size)
    return hutchinson(curvature.hvp, curvature.size, samples=samples, seed=seed)


def hessian_density(network, images, labels, *, loss_fn=None, steps=20, runs=3, seed=0,
                    batch_size=DEFAULT_BATCH_SIZE):
    """(nodes, weights), arrays of shape (runs, steps): stochastic Lanczos quadrature of the Hessian's spectral
    density (PyHessian's density()), each run from its own Rademacher start, each run's weights summing to 1. The
    extreme eigenvalues are nodes.max() and nodes.min(), the largest and smallest Ritz values over the runs."""
    curvature = Curvature(network, images, labels, loss_fn=loss_fn, batch_size=batch_size)
    return density(curvature, steps=steps, runs=runs, seed=seed)


def density(curvature, *, steps, runs, seed=0):
    """hessian_density's (nodes, weights) of a Curvature: `runs` Lanczos runs, seeds seed, seed + 1, ..."""
    quadratures = [lanczos(curvature.hvp, curvature.size, steps=steps, seed=seed + run) for run in range(runs)]
    return np.stack([q[0] for q in quadratures]), np.stack([q[1] for q in quadratures])


def sharpness(curvature, rho):
    """L(w + rho g / ||g||) - L(w), g the gradient at w; the weights are restored afterwards."""
    weights = curvature.weights()
    gradient = curvature.gradient()
    before = curvature.loss()
    try:
        curvature.set_weights(weights + rho * gradient / max(np.linalg.norm(gradient), 1e-12))
        after = curvature.loss()
    finally:
        curvature.set_weights(weights)
    return after - before


def rho_sharpness(network, images, labels, rho, *, loss_fn=None, batch_size=DEFAULT_BATCH_SIZE):
    """SAM's sharpness at radius rho: L(w + rho g / ||g||) - L(w), g the gradient of the mean loss."""
    return sharpness(Curvature(network, images, labels, loss_fn=loss_fn, batch_size=batch_size), rho)
