"""The channel-group ARD prior: whole channels switched off in training.

Per-weight sparse variational dropout zeroes weights one by one; dead-channel
elimination (`tfvnas.compress.shrinking`) can only remove a channel whose weights are
all zero, and on the example network 69-99% sparse 1x1 kernels had almost no
all-zero rows or columns. The channel prior gives every output channel of a
variational layer (every channel of a depthwise one) a multiplicative
Gaussian scale `s_c ~ N(phi_c, sigma_c^2)` with an ARD prior of its own, next
to the weights' (`tfvnas.layers.variational.VariationalLayer`, `channel_prior=True`):
one relevance per channel, whose KL, `0.5 * softplus(-log_alpha_c)`, pulls
the channel's scale to zero unless the data needs it. A channel with
`log_alpha_c >= threshold` is pruned: its kernel column is zero after strip,
and shrinking removes it with what only it fed.

The scale is drawn once per example and channel (noise `(batch, 1, 1, C)`),
not per element: a per-element draw would be Gaussian dropout on the
activations, whose noise averages out over positions, and would not be a
relevance of the channel. This is group variational dropout (Louizos et al.)
with the weights' own ARD prior instead of a log-uniform or horseshoe one,
and Gaussian instead of log-normal noise (Neklyudov et al.).

**Why phi starts small (`channel_scale_init`, default 0.1).** In the
additive parameterisation the ARD KL pulls a mean `phi` towards zero with
force `sigmoid(-log_alpha) / phi` per channel, times the KL weight 1/N_train.
Every tfvnas convolution is followed (directly, or through the pointwise
convolution of its op) by batch normalisation, so the network's function
does not depend on phi's overall scale, only on the noise ratio
`alpha = sigma^2 / phi^2`; but SGD's step in log_alpha does, as 1 / phi^2.
Starting at phi = 1 the pull moves phi by about 0.06 in a `quick` training
(N = 5,000, lr 0.05, momentum 0.9): no channel can go. A weight, by
comparison, starts near he-normal magnitudes (0.1-0.5) and the smallest ones
go first. At phi = 0.1 an unneeded channel reaches the threshold within
about a hundred steps while a needed one is held by the data term.
`channel_log_alpha_init` (default -4: 13% noise per example and channel) sets
where each channel starts on the way to the threshold. Both are config fields
(`TrainConfig.channel_scale_init`, `channel_log_alpha_init`); the guide's
dead-channel section reports what they gave.

Neither phi nor the channel's log variance takes weight decay: the ARD prior
is their prior (`decay_exclusions`).

References:
    - Louizos, Ullrich, Welling. "Bayesian Compression for Deep Learning."
      NeurIPS 2017 (group scales with their own prior, pruned by their
      dropout rate).
    - Neklyudov, Molchanov, Ashukha, Vetrov. "Structured Bayesian Pruning
      via Log-Normal Multiplicative Noise." NeurIPS 2017 (one noise variable
      per channel, shared by the whole feature map).
    - Molchanov, Ashukha, Vetrov. "Variational Dropout Sparsifies Deep
      Neural Networks." ICML 2017 (the ARD KL and the additive
      parameterisation).
"""

from tfvnas.layers import variational

CONV_LAYERS = (variational.VariationalConv2D, variational.VariationalDepthwiseConv2D)


def channel_prior_layers(model):
    """The variational layers of `model` that have the channel prior on."""
    return [layer for layer in variational.variational_layers(model) if layer.channel_prior]


def channel_sparsity(model):
    """`(pruned, total)` channel counts over the layers of `model` with the channel prior."""
    return variational.pruned_counts(layer.channel_mask() for layer in channel_prior_layers(model))


def decay_exclusions(model):
    """The channel scales' means and log variances: weight decay must not touch them.

    Their prior is the ARD one, in the ELBO; decay would be a second prior
    (on phi, a pull to zero that would prune by itself).
    """
    excluded = []
    for layer in channel_prior_layers(model):
        excluded += [layer.channel_phi, layer.channel_log_sigma2]
    return excluded
