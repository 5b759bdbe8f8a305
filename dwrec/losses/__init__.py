"""Loss zoo: objectives (per-position losses) and domain weightings (their reduction)."""
