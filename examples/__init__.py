"""Experiment harness for fastpid.integrations: data sets, late-fusion models, a training
loop with per-epoch hooks, the training methods, evaluation and the results runner
(``python -m examples.run_integrations``)."""
