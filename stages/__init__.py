"""Stage modules of the DVC graph (`dvc.yaml`): one module per stage, plus small shared ones."""
