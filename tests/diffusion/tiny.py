"""The CI-sized digits MLP zoo and generator budgets shared by the diffusion tests."""

A = {"_target_": "model_zoo.archs.MLP", "in_features": 64, "num_outputs": 10, "depth": 1, "width": 8,
     "activation": "relu"}
B = {**A, "width": 6}
TINY = {"name": "diffusion_tiny", "size": 20, "seed": 3, "chunk_size": 20,
        "data": {"name": "digits", "flatten": True},
        "arch": A,
        "space": {"lr": {"log_uniform": [3e-3, 1e-2]}, "optimizer": "adam", "batch_size": 64,
                  "arch": {"choice": [A, B]}},
        "trainer": {"epochs": 1}}
PDIFF = {"channels": [4, 4], "latent_channels": 2, "ae_steps": 2, "eval_every": 1, "ddpm_steps": 2,
         "ddpm_hidden": 16, "ddpm_blocks": 1, "timesteps": 10, "batch_size": 4}
GRAPH = {"latent_dim": 4, "encoder": "graph", "enc_hidden": 8, "enc_layers": 1, "decoder_init": "scratch", "dec_hidden": 8,
         "dec_layers": 1, "ae_steps": 2, "batch_size": 2, "inputs_per_step": 32, "eval_every": 1, "ddpm_steps": 2,
         "ddpm_hidden": 16, "ddpm_blocks": 1, "timesteps": 10}
PROBE_GRAPH = {**GRAPH, "encoder": "probe", "probes": 6, "probe_hidden": 8, "latent_map_hidden": 8}
