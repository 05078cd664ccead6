import sys

from ironpost.cli.main import main

sys.exit(main())
