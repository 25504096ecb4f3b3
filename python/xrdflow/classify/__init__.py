"""Space-group classification of powder patterns (issue 6).

A 1D-ResNet pattern encoder (:class:`xrdflow.models.PatternEncoder`, the contrastive model's
pattern tower) with three heads: crystal system (7), extinction group (120, ``scheme="laue"``
of :mod:`xrdflow.data.labels`) and space group (230), trained on augmented patterns streamed
from cached reflections of balanced random crystals (``xrdflow dataset generate``) or real
structures::

    from xrdflow.classify import load_config, train, load_classifier, classify_patterns
    result = train(load_config("configs/classifier_tiny.yaml"))   # xrdflow classifier train --config ...
    model, cfg = load_classifier(result.last_checkpoint)
    y, info = pattern_on_grid(read_pattern("scan.xy"), cfg.make_simulator())
    print(format_result(classify_patterns(model, y, k=5)[0], info))  # xrdflow classify scan.xy --checkpoint ...

Modules: :mod:`.config` (dataclasses, YAML), :mod:`.model`, :mod:`.data` (labels, cache),
:mod:`.train` (stages, checkpoints, resume, metrics.csv), :mod:`.evaluate`, :mod:`.predict`
(measured patterns), :mod:`.figures`, :mod:`.cli`.
"""
from .config import HEADS, ClassifierConfig, ClassifierModelConfig, config_from_dict, config_to_dict, load_config, \
    save_config
from .model import SpaceGroupClassifier, head_sizes, topk_accuracy
from .data import PreparedData, load_labeled, prepare_data
from .train import ClassifierTrainer, TrainResult, load_classifier, read_checkpoint, train
from .evaluate import evaluate_checkpoint, evaluate_model, predict, score
from .predict import classify_patterns, format_result, pattern_on_grid

__all__ = ["HEADS", "ClassifierConfig", "ClassifierModelConfig", "ClassifierTrainer", "PreparedData",
           "SpaceGroupClassifier", "TrainResult", "classify_patterns", "config_from_dict", "config_to_dict",
           "evaluate_checkpoint", "evaluate_model", "format_result", "head_sizes", "load_classifier",
           "load_config", "load_labeled", "pattern_on_grid", "predict", "prepare_data", "read_checkpoint",
           "save_config", "score", "topk_accuracy", "train"]
