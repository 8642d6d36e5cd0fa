"""imbsam's CPU kernels: oneDNN 3.2 convolutions (onednn.py, onednn_shim.c) and fused training-mode
BatchNorm (batchnorm.py, batchnorm.c), run as MindSpore custom operators; their C build (native.py); and
the CPU environment MindSpore and they need (environment.py).

`train.kernels` names a set (imbsam.params.KERNELS): "onednn" (imbsam's, named after its convolutions),
"mindspore" (MindSpore's own), or "auto".
"""

