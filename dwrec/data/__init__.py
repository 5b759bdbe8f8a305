"""Data layer: raw-format readers, prepare (filter, re-index, write), splits and batches."""
