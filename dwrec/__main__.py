import sys

from dwrec.cli import main

sys.exit(main())
