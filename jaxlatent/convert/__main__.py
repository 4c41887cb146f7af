"""``python -m jaxlatent.convert``: see :mod:`jaxlatent.convert.cli`."""

import sys

from jaxlatent.convert.cli import main

if __name__ == "__main__":
  sys.exit(main())
