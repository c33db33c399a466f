"""Training: the loop, samplers, checkpoints and runs built from configs."""

from visem.train.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint, save_weights
from visem.train.run import RunConfig, eval_run, load_run_config, prepare, train_run
from visem.train.sampler import BatchSampler, IndexSampler, MultiSampler
from visem.data.tasks import TaskData, build_task, list_tasks, register_task
from visem.train.trainer import TrainConfig, Trainer, seed_everything

__all__ = [
    "BatchSampler",
    "IndexSampler",
    "CheckpointError",
    "MultiSampler",
    "RunConfig",
    "TaskData",
    "TrainConfig",
    "Trainer",
    "build_task",
    "eval_run",
    "list_tasks",
    "load_checkpoint",
    "load_run_config",
    "load_weights",
    "prepare",
    "register_task",
    "save_checkpoint",
    "save_weights",
    "seed_everything",
    "train_run",
]
