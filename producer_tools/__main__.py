import sys

from producer_tools.cli import main

sys.exit(main())
