"""Names of the choices training offers, importable without TensorFlow (configs validate early)."""

HEADS = ("softmax", "arcface", "cosface")
EMBEDDING_STYLES = ("standard", "seed", "gdc", "adapter")
STRATEGIES = ("none", "mirrored", "multiworker")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "step", "constant")
DATASETS = ("folder", "lfw")
