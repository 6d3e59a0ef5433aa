"""The trainable networks: ``cpm`` (hand3d PoseNet), ``unet``, ``mano`` (ResNet regressor), ``lift`` (hand3d).

Each file holds one network and its config dataclass; :mod:`handanno.models.nets.tasks`
binds them to batches (loss, predictions, metrics) and :func:`make_task` builds one by name.
"""

from handanno.models.nets.tasks import MODEL_KINDS, TASKS, Task, make_task

__all__ = ["MODEL_KINDS", "TASKS", "Task", "make_task"]
