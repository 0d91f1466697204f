"""Run the checkpointed System 1 pipeline (the original command): data, training, evaluation.

Usage: ``python train_system1_checkpointed.py [--profile NAME | --professional] [--status]
[--reset STAGE] [--force-data|--force-train|--force-eval|--force-all] [--workdir DIR] ...``;
see ``--help``. All the logic lives in :mod:`bongard_system1.pipeline.cli`.
"""

import sys

from bongard_system1.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
