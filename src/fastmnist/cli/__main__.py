import sys

from fastmnist.cli.main import main

sys.exit(main())
