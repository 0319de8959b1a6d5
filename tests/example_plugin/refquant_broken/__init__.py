"""A plugin that fails at import, to show refquant names it and loads the others."""

raise RuntimeError("refquant_broken: this example plugin fails on purpose")
