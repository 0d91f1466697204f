"""``python -m scripts.validate_phase1 [--profile NAME] [--workdir DIR]``: run the pipeline
(professional by default) and print the Phase 1 target table; exit 0 only when every target is met.
The logic lives in :func:`bongard_system1.pipeline.cli.validate_main`.
"""

import sys

from bongard_system1.pipeline.cli import validate_main

if __name__ == "__main__":
    sys.exit(validate_main())
