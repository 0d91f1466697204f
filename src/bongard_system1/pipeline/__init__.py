"""The checkpointed pipeline: data, training and evaluation stages that each run once.

``records`` (per-stage JSON records, hashing, validation), ``profiles`` (smoke, quick, standard,
professional), ``lock`` (one run per work directory), ``stages`` (the three stage runners),
``run`` (the run that chains them and its results file), ``status`` (``--status`` and ``--reset``)
and ``cli`` (the original ``train_system1_checkpointed.py`` contract and ``system1
run|status|reset``). Importing this package imports no torch.
"""
