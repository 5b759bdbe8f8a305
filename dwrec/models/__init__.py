"""Model zoo: one module per model behind :class:`dwrec.models.base.SequentialModel`."""
