"""From a scenario file to one Dataset, each module importing only those listed before it:

``schema`` (the sections of a scenario) → ``cells`` (what one grid point
computes, its id) → ``loading`` (YAML, ``--set``, one-line messages) →
``data_checks`` → ``scenario`` (the model, its grid; load_scenario) →
``results`` (cell and combined Datasets) → ``estimates`` (memory, time) →
``cell_run`` (one cell) → ``execution`` (in turn or on dask) →
``infinite_width`` → ``sweep`` (simulate); ``destinations`` checks where a run writes.
"""
