"""`ridesync campaign NAME`: hostile peers, crashes, bad networks, fuzzed parsers and long load, each
with a short version (in `make test`) and a long one on demand. See engine/campaign/README.md."""
