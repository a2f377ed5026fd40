"""The deep belief network family: RBMs stacked greedily (Hinton et al. 2006), sampled by Gibbs
in the top RBM and a down-pass, scored by a variational lower bound on log p(v)."""
