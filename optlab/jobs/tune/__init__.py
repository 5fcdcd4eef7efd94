"""`optlab tune`: the search space, the study in its journal, one trial, the search."""
