"""`viscoin directions gan` (registered on `directions_app`)."""
