"""The accuracy benchmark (`benchmarks/accuracy_vs_tokens.py`), by role: `plan` (profiles and
runs), `runs` (data, models and training through `adaptok.train.fit`, the CSV), `report` (groups,
goal verdicts, Markdown), `plots` (figures), `speeds` (the throughput table of
`benchmarks/bench_inference.py --json` that the ToMe verdicts read)."""
