"""ImbSAM reproduction library: data, models, optimizers, training, evaluation, reports.

The library knows nothing of DVC or params.yaml; stages/ wires it to the pipeline.
"""

__version__ = "0.1.0"
