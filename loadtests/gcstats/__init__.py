"""`python -m loadtests.gcstats PREFIX`: print the figures `gcstats/sitecustomize.py` wrote."""
