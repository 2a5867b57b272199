"""The model room: what a model is, apart from how it runs.

* :mod:`retrieval.model.encoder`: the encoder interface every backend implements (``Index`` sees only it),
  and :class:`~retrieval.model.encoder.ModelIdentity`.
* :mod:`retrieval.model.source`: where a model comes from (tag, checkpoint, ``local-dir:``, ``hf-hub:``),
  checked and read without torch.
* :mod:`retrieval.model.weights`, :mod:`retrieval.model.hub`: the weights' identity and the hub cache.
* :mod:`retrieval.model.precision`: the numeric paths and which of them may share a collection.
* :mod:`retrieval.model.torch_backend`: open_clip on torch (with :mod:`~retrieval.model.quantize` and
  :mod:`~retrieval.model.text_trim`).

Importing this package imports no torch.
"""
