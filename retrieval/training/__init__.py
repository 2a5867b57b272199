"""Training open_clip models: ``train`` (contrastive) and ``distill`` (a student learns a teacher's vectors).

Laid out like open_clip's ``training/``: :mod:`.loop` (the shared optimisation loop and schedule),
:mod:`.checkpoint` (resumable state, the output folder), :mod:`.model` (building models, decoding),
:mod:`.losses`, and one module per task with its data and loss (:mod:`.train`, :mod:`.distill`,
whose teacher vectors come from :mod:`.targets`).
"""

from retrieval.training.checkpoint import check_output
from retrieval.training.loop import lr_at
from retrieval.training.losses import clip_loss, distill_loss, feature_loss, relational_loss, simclr_loss
from retrieval.training.model import build_model
from retrieval.training.train import TrainResult, train

__all__ = ["TrainResult", "build_model", "check_output", "clip_loss", "distill_loss", "feature_loss", "lr_at",
           "relational_loss", "simclr_loss", "train"]
