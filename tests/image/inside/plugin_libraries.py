"""Run in the gpu image: which libraries each library of MindSpore's GPU plugin links but the loader cannot find.

Prints JSON: {"plugin": the plugin folder, "unresolved": {library: [sonames ldd reports "not found"]}} for
libmindspore_gpu.so.11.6 and the libraries in plugin/gpu and plugin/gpu11.6.
"""

import importlib.util
import json
import subprocess
from pathlib import Path

plugin = Path(importlib.util.find_spec("mindspore").origin).parent / "lib" / "plugin"
libraries = [plugin / "libmindspore_gpu.so.11.6", *sorted((plugin / "gpu").glob("*.so*")),
             *sorted((plugin / "gpu11.6").glob("*.so*"))]
unresolved = {}
for library in libraries:
    linked = subprocess.run(["ldd", str(library)], capture_output=True, text=True, check=True).stdout
    unresolved[str(library.relative_to(plugin))] = [line.split()[0] for line in linked.splitlines()
                                                    if "not found" in line]
print(json.dumps({"plugin": str(plugin), "unresolved": unresolved}))
