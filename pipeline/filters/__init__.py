"""Keeping the rows worth keeping: `keep.KeepByScore`, with the exact top-fraction cutoff of `cutoff`."""
