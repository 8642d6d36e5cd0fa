"""Per-class accuracy, many / medium / few / all, and horizontal-flip test-time augmentation.

Group figures are balanced: the mean of the per-class accuracies in the group, as the paper
reports them, so a head class with many test images weighs no more than a tail class.
"""

import numpy as np

from imbsam.data.augment import normalize

GROUPS = ("many", "medium", "few")
TTA_VARIANTS = {"plain": False, "flip_tta": True}


def per_class_accuracy(predictions, labels, num_classes):
    """Fraction of each class's labelled samples predicted correctly; NaN for a class absent from labels."""
    predictions = np.asarray(predictions).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.size} predictions for {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    total = np.bincount(labels, minlength=num_classes).astype(np.float64)
    correct = np.bincount(labels[predictions == labels], minlength=num_classes).astype(np.float64)
    accuracy = np.full(num_classes, np.nan)
    present = total > 0
    accuracy[present] = correct[present] / total[present]
    return accuracy


def _mean_percent(values):
    """Mean of the non-NaN values in percent; None when there are none, so JSON never holds NaN."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(100.0 * values.mean()) if values.size else None


def group_accuracy(per_class, groups):
    """Balanced accuracy in percent for each of many / medium / few and for all classes.

    groups: {"many": [...], "medium": [...], "few": [...]} class indices. A group with no
    class, or only classes absent from the test labels, is None.
    """
    per_class = np.asarray(per_class, dtype=np.float64)
    result = {name: _mean_percent(per_class[np.asarray(groups.get(name, []), dtype=np.int64)]) for name in GROUPS}
    result["all"] = _mean_percent(per_class)
    return result


def logits(network, images_uint8, batch_size=500):
    """Network outputs (N, classes) as float32, in eval mode, for uint8 NCHW images."""
    from mindspore import Tensor

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    network.set_train(False)
    outputs = [
        network(Tensor(normalize(images_uint8[start:start + batch_size]))).asnumpy()
        for start in range(0, len(images_uint8), batch_size)
    ]
    return np.concatenate(outputs).astype(np.float32)


def _flipped(images):
    return np.ascontiguousarray(images[..., ::-1])


def predict_variants(network, images_uint8, batch_size=500):
    """Predicted classes of both variants from one pass over the images and one over their mirror images:
    {"plain": ..., "flip_tta": ...}, flip TTA's from the mean of an image's and its mirror image's logits."""
    plain = logits(network, images_uint8, batch_size)
    mirrored = logits(network, _flipped(images_uint8), batch_size)
    return {"plain": plain.argmax(axis=1), "flip_tta": ((plain + mirrored) / 2).argmax(axis=1)}


def summarize(predictions, labels, groups, num_classes):
    """Group accuracies plus the per-class list in percent (None for a class absent from labels)."""
    per_class = per_class_accuracy(predictions, labels, num_classes)
    result = group_accuracy(per_class, groups)
    result["per_class"] = [None if np.isnan(a) else float(100.0 * a) for a in per_class]
    return result


def evaluate_network(network, images_uint8, labels, groups, num_classes, batch_size=500):
    """Group and per-class accuracy of both variants (predict_variants): {"plain": ..., "flip_tta": ...}."""
    predicted = predict_variants(network, images_uint8, batch_size)
    return {
        variant: {"tta": TTA_VARIANTS[variant], **summarize(predicted[variant], labels, groups, num_classes)}
        for variant in TTA_VARIANTS
    }


def load_weights(network, checkpoint):
    """Load a MindSpore checkpoint into network; a parameter missing from it is an error, not a silent init."""
    import mindspore as ms

    missing, _ = ms.load_param_into_net(network, ms.load_checkpoint(str(checkpoint)), strict_load=True)
    if missing:
        raise ValueError(f"{checkpoint} lacks {len(missing)} network parameters, e.g. {missing[0]}: "
                         "was it trained with another model.arch?")
    return network


def evaluate_checkpoint(network, checkpoint, images_uint8, labels, groups, num_classes, batch_size=500):
    """Load checkpoint into network, then evaluate_network."""
    load_weights(network, checkpoint)
    return evaluate_network(network, images_uint8, labels, groups, num_classes, batch_size)
