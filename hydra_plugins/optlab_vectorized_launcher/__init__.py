"""`hydra/launcher=vectorized`: a sweep's compatible runs train together as one stacked model;
`vectorized_submitit_slurm` and `vectorized_submitit_local`: each such group is one submitit job."""
