"""Capabilities, one module each: :mod:`~weightspace.tasks.predict` (generalization prediction),
:mod:`~weightspace.tasks.nowcast` (+ ``nowcast_hook``, ``nowcast_lightning``) and
:mod:`~weightspace.tasks.hyper` (+ ``hyper_family``, ``hyper_train``). Import the module you need;
the top-level ``weightspace`` namespace exports ``load_predictor``, ``Nowcaster`` and
``load_hypernetwork``."""
