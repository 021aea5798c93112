"""BatchNorm whose training statistics span every process of a ``torch.distributed`` group, on CPU or GPU.

When a batch is split over the processes of a data-parallel run, each process's BatchNorm would normalise
its own slice by the slice's mean and variance, so one distributed step would not be the step one process
takes on the whole batch. :class:`GlobalBatchNorm2d` normalises by the whole batch's statistics (the
"cross-GPU BatchNorm" of Peng et al., MegDet, CVPR 2018) and updates its running statistics with them;
gradients flow back through the all-reduces, so every process's inputs get the gradient they would get in
one process. Outside a process group of two or more, or in eval mode, it is ``nn.BatchNorm2d``.

``torch.nn.SyncBatchNorm`` does the same but refuses CPU tensors (torch 2.13 raises "SyncBatchNorm expected
input tensor to be on GPU ..."), so a gloo run on CPU could not use it; this layer works with gloo and NCCL
alike. :func:`sync_batchnorm` and :func:`local_batchnorm` swap a network's BatchNorm2d layers to this one
and back in place, keeping their parameters and buffers (the same tensors, so optimisers stay valid).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


class _Sum(torch.autograd.Function):
    """The sum of a tensor over every process, with its gradient: each process's input reaches every process's
    output, so its gradient is the sum of theirs (``torch.distributed.nn.functional.all_reduce``, deprecated
    in torch 2.13, did the same)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def all_reduce(x: Tensor) -> Tensor:  # x: any shape, the same on every process
    """``x`` summed over the processes of the default group, differentiably."""
    out = _Sum.apply(x)
    assert isinstance(out, Tensor)
    return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with batch statistics over the whole group's batch (see the module's docstring)."""

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, H, W), B this process's rows
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        # The count rides with the sums (exact in float32 below 2^24 values per channel).
        count = torch.full((1,), x.shape[0] * x.shape[2] * x.shape[3], dtype=x.dtype, device=x.device)
        totals = all_reduce(torch.cat([x.sum(dims), count]))  # (C + 1,): sums over every process's rows
        n = totals[-1].detach()
        mean = totals[:-1] / n  # (C,)
        centred = x - mean[None, :, None, None]
        var = all_reduce(centred.square().sum(dims)) / n  # (C,) biased, as BatchNorm normalises with
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1))  # unbiased, as BatchNorm keeps
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:  # (C,), (C,)
        assert self.num_batches_tracked is not None and self.running_mean is not None
        assert self.running_var is not None
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, momentum)  # (1 − m)·running + m·batch, as F.batch_norm updates it
        self.running_var.lerp_(unbiased_var, momentum)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every ``nn.BatchNorm2d`` inside ``module`` (itself included) for :class:`GlobalBatchNorm2d`, in place,
    sharing its parameters and buffers; returns ``module``, or the new layer when ``module`` is one."""
    return _swap(module, nn.BatchNorm2d, GlobalBatchNorm2d)


def local_batchnorm(module: nn.Module) -> nn.Module:
    """Undo :func:`sync_batchnorm`: every :class:`GlobalBatchNorm2d` back to ``nn.BatchNorm2d``, in place."""
    return _swap(module, GlobalBatchNorm2d, nn.BatchNorm2d)


def _swap(module: nn.Module, old: type[nn.BatchNorm2d], new: type[nn.BatchNorm2d]) -> nn.Module:
    if type(module) is old:  # exactly: a subclass may compute something else
        assert isinstance(module, nn.BatchNorm2d)
        swapped = new(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            device=module.running_mean.device if module.running_mean is not None else None,
        )
        # The same Parameter and buffer objects, so optimisers, EMA copies and DDP see one set of tensors.
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            setattr(swapped, name, tensor)
        swapped.train(module.training)
        return swapped
    for name, child in module.named_children():
        replaced = _swap(child, old, new)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
