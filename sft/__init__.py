"""sft: the code the pipeline stages share, one idea a module (README, "Layout")."""
