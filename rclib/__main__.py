import sys

from rclib.cli import main

sys.exit(main())
