"""`viscoin directions classifier` (registered on `directions_app`)."""
