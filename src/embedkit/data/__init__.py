"""Data sources: one builder module per dataset (registered in ``registry``: each an `embedkit data` command
and a study [data] kind), the shared labelling / balanced selection / split (``build``), the phantom
generator and the folds."""
