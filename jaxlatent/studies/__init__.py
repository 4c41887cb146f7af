"""Studies: the sequences of stages that turn trained runs and a config into a result.

``analysis`` (``run_analysis``: one run's directions, inversion, eigen-analysis),
``edit_comparison`` (``run_edit_comparison``: attribute edits of several runs, one
table), ``label_fraction`` (``run_label_fraction``: SS-DAAE accuracy vs labels, next to a
supervised baseline).
``config`` holds every study's defaults and their completion, ``report`` all outputs,
``generators`` the restoring of a run.  Import the study module you run; this package
imports nothing heavy.
"""
