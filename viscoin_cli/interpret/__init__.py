"""Interpretation: concept relevance, visualisation, the HTML report."""
