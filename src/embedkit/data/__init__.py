"""Data sources: one builder module per dataset (registered in BUILDERS, each an `embedkit data` command),
the shared labelling / balanced selection / split (``build``), the phantom generator and the folds."""

BUILDERS = {"nih": "embedkit.data.nih", "chexpert": "embedkit.data.chexpert", "mimic-cxr": "embedkit.data.mimic",
            "padchest": "embedkit.data.padchest", "csv": "embedkit.data.csvfile"}
