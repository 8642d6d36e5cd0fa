"""One module per optimizer of imbsam/optimizers/, under the same name. Each defines:
- reference(ref, p, stats, x, labels, **options) -> (mean loss, gradient): the gradient the base optimizer steps
  on, in float64 NumPy on imbsam.reference's network (`ref`: that module), written from the authors' code, the
  running statistics moved as their forward passes move them; a `step` argument, if it takes one, is the step's
  index;
- FLOOR = "...": the least a step can take in forward (f) and backward (b) passes, and floor(f, b, tail_free),
  the same in milliseconds (tail_free: the share of batches without a tail sample);
- torch_gradients(t, net, params, x, y, **options): the same gradient in PyTorch (`t`: imbsam.bench.oracle's
  TorchPieces), leaving the weights at w.
"""
