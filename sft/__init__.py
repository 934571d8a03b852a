"""sft: the code the pipeline stages share, one idea a module (README, "Layout")."""

from sft.numerics import pin_numerics

# First, before any module here imports torch: every stage imports sft (sft/numerics.py says why).
pin_numerics()
