"""The losses: what `train.loss` names, one module each, found by name (imbsam.registry).

A loss is its module imbsam/losses/<name>.py plus its `<name>:` group in params.yaml. The module defines:
- LABEL = "..." and SOURCE = "...", each on one line;
- Params: its params.yaml group (an imbsam.params.LossParams), whose loss_options(class_counts) gives make_loss's
  keyword arguments from the training split's per-class counts;
- NORMALISED_HEAD: whether the network's last layer gives cosines instead of a linear map;
- make_loss(num_classes, **options): the per-sample loss Cell, loss_fn(logits, labels) -> (B,) losses, with a
  start_epoch(epoch) method; it imports MindSpore only inside.
train@ stages depend on the module train.loss names, and on no other loss.
"""
