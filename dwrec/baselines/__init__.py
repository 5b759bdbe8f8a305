"""Other libraries run on the same data and protocol as dwrec, for comparison (RecBole)."""
