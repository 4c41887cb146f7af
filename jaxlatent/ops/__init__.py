"""Array operations under the models and the direction networks.

Each module holds one kind of op, written for XLA:CPU where its own lowering is
slow, with the same values and gradients as the plain formulation:

  * :mod:`~jaxlatent.ops.resample`: depth-to-space, space-to-depth, 2x2 blocks;
  * :mod:`~jaxlatent.ops.conv2x2`: the 2x2 convs of sub-pixel resampling
    (:class:`~jaxlatent.ops.conv2x2.Conv2x2`), GEMM gradients, bfloat16 operands;
  * :mod:`~jaxlatent.ops.conv4x4`: DCGAN's 4x4 stride-2 conv and transposed conv,
    exactly, as 2x2 convs plus depth-to-space / space-to-depth (PyTorch-convertible
    4x4 kernels);
  * :mod:`~jaxlatent.ops.batch_norm`: BatchNorm with PyTorch's running statistics;
  * :mod:`~jaxlatent.ops.conv_same`: odd 'SAME' convs (5x5) through space-to-depth
    and shift GEMMs (:class:`~jaxlatent.ops.conv_same.ConvSame`);
  * :mod:`~jaxlatent.ops.norm`: GroupNorm in two passes (:class:`~jaxlatent.ops.norm.GroupNorm`);
  * :mod:`~jaxlatent.ops.pool`: 2x2 max-pooling and a fused GroupNorm -> ReLU -> pool.

Measurements behind each choice are in benchmarks/RESULTS.md.
"""
