"""The text encoder, one home for every piece of it.

* :mod:`~merc.text.encoder` -- the bundled all-MiniLM-L6-v2 (:class:`BundledMiniLM`, the default)
  and any other sentence-transformers model (:class:`TextEncoder`), embedding utterances one by
  one;
* :mod:`~merc.text.bert` -- merc's BERT port (:class:`MiniLMEncoder`), the one implementation of
  the bundled encoder for training and prediction, and the backbone ``merc finetune`` trains;
* :mod:`~merc.text.input_format` -- an utterance with its dialogue context as one encoder input;
* :mod:`~merc.text.backbone` -- loading any encoder folder, pooling the target span, batching;
* :mod:`~merc.text.record` / :mod:`~merc.text.folder` -- what a ``merc finetune`` folder holds,
  and extracting with one;
* :mod:`~merc.text.lora` -- low-rank adapters.

Which encoder a :class:`~merc.features.FeatureSpec` names is decided in one place,
:func:`merc.features.extractor.text_encoder`.
"""
