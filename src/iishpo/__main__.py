import sys

from iishpo.cli import main

sys.exit(main())
