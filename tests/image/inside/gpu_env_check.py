"""Run in the gpu image: MindSpore's own GPU environment check, as its plugin loader runs it (a private API:
mindspore/run_check/_check_version.py). Its complaints go to the log (stderr).

Usage: python gpu_env_check.py PLUGIN_FOLDER
Prints JSON: {"cuda": the CUDA version it found, "ld_library_path": [the library path it set]}.
"""

import json
import os
import sys

from mindspore.run_check._check_version import GPUEnvChecker

checker = GPUEnvChecker(os.path.join(sys.argv[1], "libmindspore_gpu.so.11.6"))
checker.check_version()
checker.set_env()
print(json.dumps({"cuda": checker.v, "ld_library_path": os.environ["LD_LIBRARY_PATH"].split(":")}))
