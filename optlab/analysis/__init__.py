"""Analysis of finished runs: summaries, figures, the critical batch, the report. No torch at import."""
