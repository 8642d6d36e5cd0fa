import sys

from imbsam.check_host import main

sys.exit(main())
