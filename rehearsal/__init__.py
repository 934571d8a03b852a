"""Rehearse a preset on the CPU before renting a GPU: `make rehearse NAME=<preset>`
(python -m rehearsal <preset>). See rehearsal/__main__.py."""
