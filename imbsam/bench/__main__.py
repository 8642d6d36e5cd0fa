import sys

from imbsam.bench.step import main

sys.exit(main())
