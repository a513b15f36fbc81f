"""GRPO's arithmetic: group-normalised advantages, per-token policy-gradient losses, log-probs.

Shapes: B responses, T token positions (label positions, i.e. sequence length - 1).
`mask` is 1 on response tokens and 0 on prompt and padding: only response tokens are trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("no_baseline", "reinforce_with_baseline", "grpo_clip")


def group_advantages(rewards: torch.Tensor, group_size: int, normalize_std: bool = True,
                     eps: float = 1e-6) -> torch.Tensor:
    """Rewards [B] laid out group after group (B = prompts * group_size) -> advantages [B].

    Each reward minus its group's mean, divided by the group's (unbiased) std + eps when
    normalize_std. A group whose rewards are all equal gets advantage 0 everywhere.
    """
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if normalize_std:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


def policy_gradient_loss(
    loss_type: str,
    logprobs: torch.Tensor,
    *,
    raw_rewards: torch.Tensor | None = None,
    advantages: torch.Tensor | None = None,
    old_logprobs: torch.Tensor | None = None,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss [B, T] (to be masked and averaged) and a [B, T] bool: clipping was active.

    no_baseline:             -R * log p
    reinforce_with_baseline: -A * log p
    grpo_clip:               -min(ratio * A, clip(ratio, 1 - c, 1 + c) * A), ratio = p / p_old
    """
    no_clip = torch.zeros_like(logprobs, dtype=torch.bool)
    if loss_type == "no_baseline":
        assert raw_rewards is not None
        return -raw_rewards[:, None] * logprobs, no_clip
    if loss_type == "reinforce_with_baseline":
        assert advantages is not None
        return -advantages[:, None] * logprobs, no_clip
    if loss_type == "grpo_clip":
        assert advantages is not None and old_logprobs is not None
        ratio = torch.exp(logprobs - old_logprobs)
        unclipped = ratio * advantages[:, None]
        clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages[:, None]
        return -torch.minimum(unclipped, clipped), clipped < unclipped
    raise ValueError(f"unknown loss_type {loss_type!r}; one of {LOSS_TYPES}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of values where mask is 1 (over `dim`, or over everything). Empty rows give 0."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def aggregate_loss(per_token_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One mean over every response token of the micro-batch (all rows pooled), as the
    reference does: a long response weighs more than a short one in the same micro-batch."""
    return masked_mean(per_token_loss, mask)


def accumulation_counts(n_micro_batches: int, grad_accum: int) -> list[int]:
    """For each micro-batch, the number of micro-batches in its accumulation window: the loss of
    a micro-batch is divided by it, so every optimizer step averages its window's losses. Full
    windows hold grad_accum; a final partial window is divided by its own count."""
    counts = []
    for start in range(0, n_micro_batches, grad_accum):
        size = min(grad_accum, n_micro_batches - start)
        counts.extend([size] * size)
    return counts


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(token t+1 | tokens <= t) for every position: [B, T-1]; optional entropy [B, T-1]."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits[:, :-1].float()
    log_probs = F.log_softmax(logits, dim=-1)
    labels = input_ids[:, 1:]
    picked = log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        entropy = -(log_probs.exp() * log_probs).sum(-1)
    return picked, entropy
