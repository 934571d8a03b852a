"""sft: the code the pipeline stages share, one idea a module (README, "Layout")."""

import logging

from sft.numerics import pin_numerics

# First, before any module here imports torch: every stage imports sft (sft/numerics.py says why).
pin_numerics()

# bitsandbytes, imported by peft, looks for a CPU kernel in the hub's `kernels` package on AVX512-BF16
# machines and logs a warning that reads as a failure without it; its own CPU code is what runs
# here, and no code is fetched from the hub. Errors still show.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
