"""`python -m concept_encoder.cli` (torchrun and accelerate launch the verbs this way)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
