"""Experiment harness for fastpid.integrations: data sets (including AV-digits,
:mod:`examples.avdigits`), late-fusion models, a training loop with per-epoch hooks, the
training methods, evaluation and the results runners (``python -m examples.run_integrations``;
the fair protocol of :mod:`examples.fair`: ``python -m examples.run_fair``)."""
