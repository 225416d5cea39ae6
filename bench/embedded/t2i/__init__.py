"""The embedded text-to-image default ("embedded-t2i"): digit captions, a scoring CLIP (open_clip), a separately
trained conditioning text encoder and a 16x16 pixel-space ``UNet2DConditionModel``, all trained here on the
sklearn digits of :mod:`bench.embedded.data` (same train / held-out split as the digits model).

Modules: :mod:`.captions` (templates), :mod:`.tokens` (open_clip BPE, truncation, token augmentation),
:mod:`.clip_model` (scoring CLIP), :mod:`.text_encoder` (conditioning encoder), :mod:`.contrastive` (the CLIP
objective both encoders are trained with), :mod:`.unet` (configs), :mod:`.train`, :mod:`.loader`; the gates and
the training command are :mod:`bench.evaluation.gates_t2i` and :mod:`bench.commands.embedded_t2i_train`.
"""
