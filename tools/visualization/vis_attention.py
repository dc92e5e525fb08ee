# Copyright (c) mmlinattn contributors. All rights reserved.
"""Draw the attention each layer of a backbone assigns to one query.

For a query position on an input image, every attention layer that has a
handler in :data:`ATTENTION_HANDLERS` contributes one panel: its attention
weights over the keys (mean over heads, or one head), overlaid on the image
-- the focus-ability plots of the FLatten paper (Han et al., ICCV 2023,
Figs. 1 and 6). Handlers exist for FLatten's :class:`FocusedLinearAttention`
(row-normalised ``phi_p(q_i) . phi_p(k_j)``, optionally with the DWC kernel
as the official ``visualize.py`` adds it) and PVT's softmax
spatial-reduction attention. Another layer plugs in with one function::

    @attention_handler(MyAttention)
    def my_attention_row(layer, x, hw, query):
        # x: (1, N, C) input of the layer, hw: its (H, W) token grid,
        # query: flat index of the query token in that grid
        return weights, key_hw  # (heads, n) weights, (h, w) of the keys

Examples::

    python tools/visualization/vis_attention.py demo.jpg attn.png \
        --backbone FLattenPVT --arch tiny \
        --checkpoint checkpoints/flatten-pvt-tiny_in1k.pth --query 120 90
    python tools/visualization/vis_attention.py demo.jpg attn.png \
        --config configs/classification/flatten-pvt-tiny_8xb128_in1k.py \
        --checkpoint ... --query 0.5 0.5 --dwc
"""
import argparse
import math
import re
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

Grid = Tuple[int, int]
Handler = Callable[[nn.Module, torch.Tensor, Grid, int], Tuple[torch.Tensor,
                                                               Grid]]

#: attention layer class -> function returning its weights for one query
ATTENTION_HANDLERS: Dict[type, Handler] = {}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def attention_handler(layer_cls: type) -> Callable[[Handler], Handler]:
    """Register ``fn(layer, x, hw, query) -> (weights (heads, n), key_hw)``
    for ``layer_cls`` (and its subclasses)."""

    def register(fn: Handler) -> Handler:
        ATTENTION_HANDLERS[layer_cls] = fn
        return fn

    return register


def find_handler(module: nn.Module) -> Optional[Handler]:
    for cls in type(module).__mro__:
        if cls in ATTENTION_HANDLERS:
            return ATTENTION_HANDLERS[cls]
    return None


# ---------------------------------------------------------------- handlers
def _register_builtin_handlers() -> None:
    from mmlinattn.models.attention import (CSWinAttention,
                                            FocusedLinearAttention,
                                            SpatialReductionAttention)

    @attention_handler(FocusedLinearAttention)
    def focused_linear_attention_row(layer, x, hw, query):
        """Row ``query`` of the normalised ``phi_p(Q) phi_p(K)^T`` per head
        (what the linear form computes implicitly)."""
        q, k, _, kv_hw = layer.project(x, hw)
        phi_q, phi_k = layer.focused_features(q[:, query:query + 1], k, kv_hw)
        h, d = layer.num_heads, layer.head_dims
        phi_q = phi_q[0].view(h, 1, d)
        phi_k = phi_k[0].view(-1, h, d).transpose(0, 1)  # (h, n, d)
        sim = (phi_q @ phi_k.transpose(1, 2))[:, 0]  # (h, n)
        return sim / sim.sum(-1, keepdim=True), kv_hw

    @attention_handler(SpatialReductionAttention)
    def spatial_reduction_softmax_row(layer, x, hw, query):
        q, k, _, kv_hw = layer.project(x, hw)
        q = q[0, :, query:query + 1]  # (h, 1, d)
        logits = q @ k[0].transpose(1, 2) * q.shape[-1]**-0.5
        return logits[:, 0].softmax(-1), kv_hw

    @attention_handler(CSWinAttention)
    def cswin_stripe_row(attn, x, hw, query):
        """CSWin's stripe softmax (zero outside the query's stripes)."""
        q, k, _ = attn.qkv(x).chunk(3, dim=-1)
        H, W = hw
        rows = torch.arange(H * W) // W
        cols = torch.arange(H * W) % W
        qy, qx, s = query // W, query % W, attn.split_size
        if attn.global_window:
            branches = [(slice(None), torch.ones(H * W, dtype=torch.bool))]
        else:
            c = q.shape[-1] // 2
            branches = [(slice(0, c), cols // s == qx // s),
                        (slice(c, None), rows // s == qy // s)]
        heads = attn.num_heads // len(branches)
        weights = []
        for channels, inside in branches:
            qb, kb = q[0, query, channels], k[0, :, channels]
            d = qb.shape[-1] // heads
            logits = torch.einsum('hd,nhd->hn', qb.view(heads, d),
                                  kb.view(-1, heads, d)) * d**-0.5
            weights.append(
                logits.masked_fill(~inside, float('-inf')).softmax(-1))
        return torch.cat(weights), hw


_register_builtin_handlers()


def add_dwc_kernel(layer: nn.Module, weights: torch.Tensor, hw: Grid,
                   query: int) -> torch.Tensor:
    """Equivalent attention of FLatten's attention + DWC, as the official
    ``visualize.py``: the depthwise kernel (here averaged over its
    channels) is added around the query, then ``|.|`` is renormalised."""
    H, W = hw
    kernel = layer.dwc.weight.detach().mean(0)[0]  # (k, k)
    r = kernel.shape[0] // 2
    qy, qx = divmod(query, W)
    band = torch.zeros(H + 2 * r, W + 2 * r, dtype=weights.dtype)
    band[qy:qy + 2 * r + 1, qx:qx + 2 * r + 1] = kernel
    weights = (weights + band[r:r + H, r:r + W].reshape(1, -1)).abs()
    return weights / weights.sum(-1, keepdim=True)


def query_index(query: Sequence[float], image_hw: Grid, hw: Grid) -> int:
    """Flat token index of the query pixel (x, y) -- or of the fractions
    (x, y) when both are <= 1 -- on a (H, W) token grid."""
    x, y = query
    if x <= 1 and y <= 1:
        x, y = x * image_hw[1], y * image_hw[0]
    row = min(int(y * hw[0] / image_hw[0]), hw[0] - 1)
    col = min(int(x * hw[1] / image_hw[1]), hw[1] - 1)
    return row * hw[1] + col


@torch.no_grad()
def attention_maps(model: nn.Module,
                   image: torch.Tensor,
                   query: Sequence[float],
                   layers: Optional[str] = None,
                   head: Optional[int] = None,
                   dwc: bool = False) -> List[Tuple[str, np.ndarray]]:
    """Run ``model`` on ``image`` (1, 3, H, W) and return ``(layer name,
    (h, w) attention map)`` for every handled attention layer whose name
    matches the regex ``layers``; ``head=None`` averages the heads."""
    captured = []

    def hook(module, args, kwargs):
        """Keep ``(x, hw)`` of layers called as ``layer(x, hw)``."""
        x = args[0] if args else kwargs.get('x')
        hw = args[1] if len(args) > 1 else kwargs.get('hw')
        if (isinstance(x, torch.Tensor) and isinstance(hw, (tuple, list))
                and len(hw) == 2 and all(isinstance(s, int) for s in hw)):
            captured.append((module, x, tuple(hw)))
        else:
            warnings.warn(f'skipped {names[module]}: not called as '
                          'layer(x, (H, W)); register a handler for the '
                          'module that calls it')

    handles, names = [], {}
    for name, module in model.named_modules():
        if find_handler(module) is None:
            continue
        if layers is not None and not re.search(layers, name):
            continue
        names[module] = name
        handles.append(
            module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        model(image)
    finally:
        for handle in handles:
            handle.remove()
    if not captured:
        raise RuntimeError(
            'no attention layer with a handler ran; handled types: '
            f'{[c.__name__ for c in ATTENTION_HANDLERS]}')
    maps = []
    for module, x, hw in captured:
        q_idx = query_index(query, image.shape[-2:], hw)
        try:
            weights, key_hw = find_handler(module)(module, x[:1], hw, q_idx)
        except NotImplementedError as err:
            warnings.warn(f'skipped {names[module]}: {err}')
            continue
        weights = weights.float()
        if dwc and hasattr(module, 'dwc') and key_hw == hw:
            weights = add_dwc_kernel(module, weights, hw, q_idx)
        weights = weights.mean(0) if head is None else weights[head]
        maps.append((names[module], weights.reshape(key_hw).numpy()))
    return maps


def load_image(path: str, size: Grid) -> Tuple[np.ndarray, torch.Tensor]:
    from PIL import Image
    image = Image.open(path).convert('RGB').resize((size[1], size[0]),
                                                   Image.BICUBIC)
    array = np.array(image)
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return array, ((tensor - mean) / std)[None]


def draw(image: np.ndarray,
         maps: List[Tuple[str, np.ndarray]],
         query: Sequence[float],
         out: str,
         cols: int = 4) -> None:
    """Save the image with the query marked, then one overlay per layer."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    H, W = image.shape[:2]
    x, y = query
    if x <= 1 and y <= 1:
        x, y = x * W, y * H
    panels = len(maps) + 1
    cols = min(cols, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    axes.flat[0].imshow(image)
    axes.flat[0].scatter([x], [y], c='red', s=60, marker='x')
    axes.flat[0].set_title('query', fontsize=8)
    for ax, (name, attn) in zip(axes.flat[1:], maps):
        up = F.interpolate(
            torch.from_numpy(attn)[None, None], size=(H, W),
            mode='nearest')[0, 0].numpy()
        ax.imshow(image)
        ax.imshow(up, cmap='jet', alpha=0.5, vmin=0, vmax=up.max())
        ax.scatter([x], [y], c='white', s=30, marker='x')
        ax.set_title(name.replace('.attn', ''), fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def build_backbone(args: argparse.Namespace) -> nn.Module:
    from mmlinattn.utils.model_builder import build_model
    if args.config:
        return build_model(
            config=args.config, backbone_only=True,
            checkpoint=args.checkpoint)[0]
    return build_model(
        backbone=args.backbone, arch=args.arch, checkpoint=args.checkpoint)[0]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw per-layer attention weights for one query')
    parser.add_argument('image', help='input image')
    parser.add_argument('out', help='output PNG')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        '--config', help='config file with model.backbone (or backbone)')
    source.add_argument('--backbone', help='registered backbone type')
    parser.add_argument('--arch', default='tiny', help='arch for --backbone')
    parser.add_argument(
        '--checkpoint',
        help='mmlinattn checkpoint (classifier or backbone-only)')
    parser.add_argument(
        '--query',
        type=float,
        nargs=2,
        default=(0.5, 0.5),
        metavar=('X', 'Y'),
        help='query pixel (x, y) of the resized image, or fractions <= 1')
    parser.add_argument(
        '--img-size', type=int, nargs='+', default=[224], help='H [W]')
    parser.add_argument(
        '--layers', help='regex on layer names, e.g. "stages\\.[01]\\."')
    parser.add_argument(
        '--head', type=int, help='one head (default: mean over heads)')
    parser.add_argument(
        '--dwc',
        action='store_true',
        help="add FLatten's DWC kernel (as the official visualize.py)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    args = parse_args(argv)
    size = tuple(args.img_size * 2)[:2] if len(args.img_size) == 1 else tuple(
        args.img_size[:2])
    model = build_backbone(args)
    image, tensor = load_image(args.image, size)
    maps = attention_maps(model, tensor, args.query, args.layers, args.head,
                          args.dwc)
    draw(image, maps, args.query, args.out)
    print(f'{len(maps)} attention maps -> {args.out}')
    return [name for name, _ in maps]


if __name__ == '__main__':
    main()
