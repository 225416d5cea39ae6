"""AutoDiffusion (Li et al. 2023): training-free search over timesteps and per-step dropped layers."""
