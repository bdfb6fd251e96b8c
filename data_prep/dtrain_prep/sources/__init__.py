"""Sources: each turns raw data (a tree, tars, pickles, sklearn's digits) into a SourcePlan."""
