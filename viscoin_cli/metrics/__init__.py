"""Metrics: FID, and (later) the paper's accuracy, reconstruction, faithfulness and consistency."""
