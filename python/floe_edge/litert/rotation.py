"""A rotation of the residual stream before dynamic-range int8 export (the idea of QuaRot / SpinQuant, offline part).

Dynamic-range int8 quantizes each activation row with one scale, so the few large channels of an LLM's residual
stream (after RMSNorm's gains) leave little resolution for the rest. With the gains folded into the projections that
read the normalized stream, the whole model can be rewritten for the rotated stream h·Q (Q orthogonal): RMSNorm
without gains commutes with Q, every reader W becomes W·Q and every writer W becomes Qᵀ·W. In float the logits are
unchanged; the outliers are spread over all channels, so the per-row int8 scales fit every channel better.

The embedding is read as rows (E·Q) and the output head includes the final norm's gain, so a tied head is untied:
the int8 file grows by one vocabulary x dim matrix (28 MB for SmolLM2-135M). Measured: README, "LiteRT".
"""

from __future__ import annotations

from typing import Any

__all__ = ["ROTATION_SEED", "rotate_residual"]

ROTATION_SEED = 0  # a fixed seed: the same GGUF always exports to the same file


def _orthogonal(n: int, seed: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()  # sign fix: the Haar-distributed Q of this seed


def rotate_residual(model: Any, seed: int = ROTATION_SEED) -> None:
    """Rewrite a transformers llama model in place for the residual stream rotated by a random orthogonal matrix;
    the norms' gains become 1 (folded) and the output head is untied."""
    import torch

    m = model.model
    q = _orthogonal(model.config.hidden_size, seed)
    with torch.no_grad():
        def fold_then_read(linears: tuple[Any, ...], norm: Any) -> None:
            gain = norm.weight.detach().clone()
            norm.weight.fill_(1.0)
            for lin in linears:
                lin.weight.copy_((lin.weight * gain[None, :]) @ q)

        head = torch.nn.Linear(m.norm.weight.shape[0], model.lm_head.weight.shape[0], bias=False)
        head.weight.copy_(model.lm_head.weight)  # a new tensor: a tied head shares the embedding's
        model.lm_head = head
        fold_then_read((head,), m.norm)
        m.embed_tokens.weight.copy_(m.embed_tokens.weight @ q)
        for layer in m.layers:
            attn, mlp = layer.self_attn, layer.mlp
            fold_then_read((attn.q_proj, attn.k_proj, attn.v_proj), layer.input_layernorm)
            fold_then_read((mlp.gate_proj, mlp.up_proj), layer.post_attention_layernorm)
            for writer in (attn.o_proj, mlp.down_proj):
                writer.weight.copy_(q.T @ writer.weight)
                if writer.bias is not None:
                    writer.bias.copy_(q.T @ writer.bias)
    model.config.tie_word_embeddings = False
