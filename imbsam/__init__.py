"""ImbSAM reproduction library: data, models, optimizers, training, evaluation, reports.

The library knows nothing of DVC: imbsam.params describes params.yaml, and stages/ turns it into the
library's arguments.
"""

from imbsam.kernels.environment import prepare_environment

__version__ = "0.1.0"

# Code that uses the library without imbsam.device.setup() still gets oneDNN's fast CPU convolutions,
# provided it imports imbsam before mindspore. A value the user set is kept.
prepare_environment()
