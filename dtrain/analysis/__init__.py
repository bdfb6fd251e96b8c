"""The papers' analyses, runnable on any prepared dataset.

- curves:         training/test error vs iterations read from MLflow (R1 Fig. 4, 6)
- figures:        the matplotlib drawings of those figures (PNG + SVG)
- responses:      std of each 3x3 layer's response after BN (R1 Fig. 7)
- model_source:   a model from a trainer checkpoint or from the registry
- experiments:    the degradation experiment (plain vs residual at 20/32/44/56 layers, over seeds)
- degradation_report: its mean and spread over seeds, tables, figure and record (curves/)
- training_runs:  one `python -m dtrain.train` process per experiment run
- paper_numbers(_r2) / reports / reproduction: a table row of the papers, rerun and compared
- paper_protocols / protocol_eval: how each table was tested, run on checkpoints (or an ensemble)

Commands import these lazily: `dtrain --help` stays fast.
"""
