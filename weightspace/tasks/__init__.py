"""Capabilities, one module each: :mod:`~weightspace.tasks.predict` (generalization prediction),
:mod:`~weightspace.tasks.nowcast` (+ ``nowcast_stream``, ``nowcast_plan``, ``nowcast_hook``, ``nowcast_lightning``),
:mod:`~weightspace.tasks.hyper` (+ ``hyper_family``, ``hyper_train``) and
:mod:`~weightspace.tasks.diffusion` (+ ``diffusion_ddpm``, ``diffusion_pdiff``, ``diffusion_graph``,
``diffusion_data``, ``diffusion_align``, ``diffusion_baselines``, ``diffusion_metrics``). Import the module you need;
the top-level ``weightspace`` namespace exports ``load_predictor``, ``Nowcaster`` and
``load_hypernetwork``."""
