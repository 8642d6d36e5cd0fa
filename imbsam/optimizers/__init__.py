"""The optimizers: what `train.optimizers` lists, one module each, found by name (imbsam.registry).

An optimizer is its module imbsam/optimizers/<name>.py plus its `<name>:` group in params.yaml, nothing else.
The module defines, each LABEL and SOURCE on one line:
- LABEL = "...": its name in reports; SOURCE = "...": whose update it is;
- Params: its params.yaml group (an imbsam.params.OptimizerParams);
- make_step(parts, **options) -> step(images, labels) -> loss: one update of the base optimizer from the
  pieces of imbsam.optim.StepParts, importing MindSpore only inside (validation imports the module before the
  device is set up);
- optionally TUNED_WITH_LOSS = "...": the train.loss its authors' defaults were chosen with, if not ce.
Each train@<name>-<seed> stage depends on its own module only, so adding or editing one retrains no other.
Its checks (a float64 reference, the benchmark's floor, a PyTorch twin) live in
imbsam/verify/optimizers/<name>.py.
"""
