import sys

from visem.cli import main

sys.exit(main())
