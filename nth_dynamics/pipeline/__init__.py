"""From a scenario file to one Dataset: the schema (``scenario``), the cells of
its sweep and running them (``sweep``), and the results on disk (``results``)."""
