"""`python -m streaming_vlm.eval {judge,report,generate,baseline,run}`; see `cli.py`."""

import sys

from streaming_vlm.eval.cli import main

if __name__ == "__main__":
    sys.exit(main())
