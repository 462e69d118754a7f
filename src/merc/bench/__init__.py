"""``merc bench``: the seed papers' tables, figures and efficiency claims, measured honestly.

* :mod:`merc.bench.accuracy` -- models x corpora x variants x seeds, each validation-selected,
  written as Markdown/CSV tables and plots; resumable.
* :mod:`merc.bench.efficiency` -- parameters, FLOPs per dialogue, inference and training time per
  registered model on real test splits.
* :mod:`merc.bench.scaling` -- forward time and peak memory versus conversation length for the
  context layers (BiSSM FFT, selective scan, self-attention, LSTM).
"""
