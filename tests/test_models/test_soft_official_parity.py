# Copyright (c) mmlinattn contributors. All rights reserved.
"""SOFT against a functional re-statement of the official forward.

``official_soft_logits`` below is written from ``spec/soft.md`` §3-4 on the
*official* key layout (``block{i}.{j}.att.mha.W_q`` ...), with the official
association order, torch-path kernel (``q^2 @ ones + ones @ k^2 - 2 q k``),
tanh-GELU formula and both Newton-Schulz variants. It shares no code with
``mmlinattn.models``; the official weights reach our model only through
``convert_soft_official``. The released checkpoints themselves cannot be
downloaded here (Google Drive).
"""
import importlib.util
import math
import os.path as osp
import subprocess
import sys
from argparse import Namespace

import pytest
import torch
import torch.nn.functional as F

from mmlinattn.models.attention.soft_attention import SoftmaxFreeAttention
from mmlinattn.models.backbones.soft import (SOFT, convert_soft_official,
                                             convert_soft_to_official,
                                             infer_soft_arch)

CONVERTER = 'tools/model_converters/soft2mmlinattn.py'
SMALL_ARCH = dict(
    embed_dims=[32, 64, 64, 64], num_heads=[1, 2, 2, 2], depths=[1, 2, 1, 2])


# ------------------------------------------------- official re-statement
def _torch_kernel(q, k_t):
    """Official ``subtraction_gaussian_kernel_torch`` (k already
    transposed)."""
    ones_k = torch.ones(k_t.shape[-2:], dtype=q.dtype)
    ones_q = torch.ones(q.shape[-2:], dtype=q.dtype)
    return q**2. @ ones_k + ones_q @ k_t**2. - 2. * (q @ k_t)


def _newton_a(mat, iters):
    eye = torch.eye(mat.size(-1), dtype=mat.dtype)
    alpha = 0.9 * 2 / torch.max(torch.sum(mat, dim=-1), -1)[0]**2
    p = mat + 0.01 * eye
    v = alpha[..., None, None].broadcast_to(p.shape) * p
    for _ in range(iters):
        v = 2 * v - v @ p @ v
    return v


def _newton_b(mat, iters):
    eye = torch.eye(mat.size(-1), dtype=mat.dtype)
    alpha = 2 / (torch.max(torch.sum(mat, dim=-1))**2)
    v = alpha * mat
    pnorm = torch.max(torch.sum(torch.abs(eye - mat @ v), dim=-2))
    count = 0
    while pnorm > 1.01 and count < 10:
        alpha *= 0.5
        v = alpha * mat
        pnorm = torch.max(torch.sum(torch.abs(eye - mat @ v), dim=-2))
        count += 1
    for _ in range(iters):
        v = 2 * v - v @ mat @ v
    return v


def _linear(x, sd, name):
    return F.linear(x, sd[name + '.weight'], sd[name + '.bias'])


def _ln(x, sd, name, eps):
    return F.layer_norm(x, x.shape[-1:], sd[name + '.weight'],
                        sd[name + '.bias'], eps)


def _approx_gelu(x):
    return 0.5 * x * (1 + torch.tanh(
        math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def _soft_attention(x, sd, p, heads, H, W, ratio, norm, newton, iters):
    b, n, c = x.shape
    d = c // heads
    q = _linear(x, sd, p + 'W_q').reshape(b, n, heads, d).transpose(1, 2)
    v = _linear(x, sd, p + 'W_v').reshape(b, n, heads, d).transpose(1, 2)
    q = q / math.sqrt(math.sqrt(d))
    ql = q.reshape(b * heads, H * W, d).reshape(b * heads, H, W, d)
    ql = F.conv2d(ql.permute(0, 3, 1, 2), sd[p + 'attn.Qlandmark_op.weight'],
                  stride=ratio)
    ql = ql.flatten(2).transpose(1, 2).reshape(b, heads, -1, d)
    ql = F.gelu(_ln(ql, sd, p + 'attn.Qnorm_act.0', 1e-5))
    k1 = torch.exp(-_torch_kernel(q, ql.transpose(-1, -2).contiguous()) / 2)
    k2 = torch.exp(-_torch_kernel(ql, ql.transpose(-1, -2).contiguous()) / 2)
    k3 = k1.transpose(-1, -2)
    if norm:
        d_sym = 1 / k2.sum(-1, keepdim=True).sqrt()
        inv = (_newton_b if newton == 'b' else _newton_a)(k2, iters)
        inv = d_sym * inv * d_sym.transpose(-1, -2)
    else:
        inv = (_newton_b if newton == 'b' else _newton_a)(k2, iters)
    out = (k1 @ inv) @ (k3 @ v)
    conv_w = sd[p + 'attn.conv.weight']
    vv = v.reshape(b, heads, H, W, d).permute(0, 4, 1, 2, 3)
    vv = F.conv2d(vv.reshape(b * d, heads, H, W), conv_w,
                  padding=conv_w.shape[-1] // 2, groups=heads)
    out = out + vv.reshape(b, d, heads, H, W).flatten(3).permute(0, 2, 3, 1)
    out = out.transpose(1, 2).reshape(b, n, c)
    return _linear(out, sd, p + 'ff')


def _patch_embed(x, sd, stage):
    p = f'patch_embed{stage}.proj.'
    layers = [(0, 2), (3, 1), (6, 2)] if stage == 1 else [(0, 2)]
    for idx, stride in layers:
        x = F.conv2d(x, sd[f'{p}{idx}.weight'], sd[f'{p}{idx}.bias'],
                     stride=stride, padding=1)
        bn = f'{p}{idx + 1}.'
        x = F.relu(F.batch_norm(x, sd[bn + 'running_mean'],
                                sd[bn + 'running_var'], sd[bn + 'weight'],
                                sd[bn + 'bias'], False, 0.1, 1e-5))
    H, W = x.shape[2:]
    return x.flatten(2).transpose(1, 2), H, W


def _interp_pos(pos, H, W):
    n = pos.shape[1]
    s = int(n**0.5)
    pos = pos.reshape(1, s, s, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(H, W), mode='bilinear', align_corners=False)
    return pos.flatten(2).transpose(-1, -2)


def official_soft_logits(sd,
                         x,
                         heads,
                         norm=False,
                         newton='a',
                         iters=20,
                         ratios=(8, 4, 2),
                         return_stages=False):
    """Official ``SoftmaxFree(Norm)VisionTransformer.forward`` (eval)."""
    B = x.shape[0]
    stages = []
    for stage in (1, 2, 3):
        x, H, W = _patch_embed(x, sd, stage)
        x = x + _interp_pos(sd[f'pos_embed{stage}'], H, W)
        j = 0
        while f'block{stage}.{j}.att.norm1.weight' in sd:
            p = f'block{stage}.{j}.att.'
            y = _soft_attention(x, sd, p + 'mha.', heads[stage - 1], H, W,
                                ratios[stage - 1], norm, newton, iters)
            x = _ln(x + y, sd, p + 'norm1', 1e-5)
            y = _linear(_approx_gelu(_linear(x, sd, p + 'ff1')), sd,
                        p + 'ff2')
            x = _ln(x + y, sd, p + 'norm2', 1e-5)
            j += 1
        x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
        stages.append(x)
    x, H, W = _patch_embed(x, sd, 4)
    pos = sd['pos_embed4']
    pos = torch.cat([pos[:, :1], _interp_pos(pos[:, 1:], H, W)], 1)
    x = torch.cat([sd['cls_token'].expand(B, -1, -1), x], 1) + pos
    j = 0
    while f'block4.{j}.norm1.weight' in sd:
        p = f'block4.{j}.'
        y = _ln(x, sd, p + 'norm1', 1e-6)
        n, c = y.shape[1:]
        h = heads[3]
        q = _linear(y, sd, p + 'attn.q').reshape(B, n, h, c // h)
        kv = _linear(y, sd, p + 'attn.kv').reshape(B, n, 2, h, c // h)
        q, kv = q.permute(0, 2, 1, 3), kv.permute(2, 0, 3, 1, 4)
        attn = (q @ kv[0].transpose(-2, -1)) * (c // h)**-0.5
        y = (attn.softmax(-1) @ kv[1]).transpose(1, 2).reshape(B, n, c)
        x = x + _linear(y, sd, p + 'attn.proj')
        y = _linear(F.gelu(_linear(_ln(x, sd, p + 'norm2', 1e-6), sd,
                                   p + 'mlp.fc1')), sd, p + 'mlp.fc2')
        x = x + y
        j += 1
    stage4 = x[:, 1:].transpose(1, 2).reshape(B, -1, H, W)
    logits = _linear(_ln(x, sd, 'norm', 1e-6)[:, 0], sd, 'head')
    if return_stages:
        return logits, stages + [stage4]
    return logits


# --------------------------------------------------------------- helpers
def random_official_state_dict(arch, sym_norm, seed=0, num_classes=10):
    """Official-layout weights: our randomly initialised model exported
    with ``convert_soft_to_official``, BN statistics randomised."""
    torch.manual_seed(seed)
    model = SOFT(arch, out_type='cls_token', sym_norm=sym_norm)
    sd = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    sd['head.fc.weight'] = torch.randn(num_classes, model.embed_dims[3]) * .02
    sd['head.fc.bias'] = torch.randn(num_classes) * .02
    official = convert_soft_to_official(sd)
    for key, value in official.items():
        if key.endswith('running_mean'):
            official[key] = torch.randn_like(value) * 0.1
        elif key.endswith('running_var'):
            official[key] = torch.rand_like(value) + 0.5
    return official


def our_logits(official, arch, x, **kwargs):
    converted = convert_soft_official(official)
    model = SOFT(arch, out_type='cls_token', **kwargs).eval()
    backbone = {
        k[len('backbone.'):]: v
        for k, v in converted.items() if k.startswith('backbone.')
    }
    model.load_state_dict(backbone, strict=True)
    with torch.no_grad():
        feat = model(x)[0]
    return F.linear(feat, converted['head.fc.weight'],
                    converted['head.fc.bias'])


# ----------------------------------------------------------------- tests
@pytest.mark.parametrize('sym_norm,newton', [(False, 'a'), (True, 'b'),
                                             (False, 'b')])
def test_logits_equal_official_restatement(sym_norm, newton):
    official = random_official_state_dict(SMALL_ARCH, sym_norm)
    x = torch.randn(1, 3, 70, 83)
    ref = official_soft_logits(
        official, x, SMALL_ARCH['num_heads'], norm=sym_norm, newton=newton)
    ours = our_logits(
        official,
        SMALL_ARCH,
        x,
        sym_norm=sym_norm,
        newton_variant=newton,
        kernel_impl='reference')
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('newton', ['a', 'b'])
@pytest.mark.parametrize('sym_norm', [False, True])
def test_tiny_float64_equals_official_restatement(sym_norm, newton):
    """A ``.double()`` SOFT(-Norm)-Tiny computes its attention core in
    float64 too: its logits equal the float64 official path to 1e-12."""
    official = {
        k: v.double() if v.is_floating_point() else v
        for k, v in random_official_state_dict('tiny', sym_norm).items()
    }
    x = torch.randn(1, 3, 96, 112, dtype=torch.float64)
    ref = official_soft_logits(
        official, x, [2, 4, 10, 16], norm=sym_norm, newton=newton)
    converted = convert_soft_official(official)
    model = SOFT('tiny', out_type='cls_token', sym_norm=sym_norm,
                 newton_variant=newton, kernel_impl='reference')
    model = model.double().eval()
    model.load_state_dict(
        {k[9:]: v for k, v in converted.items() if k.startswith('backbone.')},
        strict=True)
    with torch.no_grad():
        ours = F.linear(model(x)[0], converted['head.fc.weight'],
                        converted['head.fc.bias'])
    assert ours.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_tiny_224_equals_official_restatement_stagewise():
    """Full SOFT-Tiny-Norm at 224 (7x7 landmarks, official shapes)."""
    official = random_official_state_dict('tiny', True, num_classes=1000)
    assert len(official) == 187  # soft.md §6.2
    x = torch.randn(1, 3, 224, 224)
    ref, ref_stages = official_soft_logits(
        official, x, [2, 4, 10, 16], norm=True, newton='b',
        return_stages=True)
    converted = convert_soft_official(official)
    model = SOFT('tiny', out_indices=(0, 1, 2, 3), sym_norm=True,
                 kernel_impl='reference').eval()
    missing, unexpected = model.load_state_dict(
        {k[9:]: v for k, v in converted.items() if k.startswith('backbone.')},
        strict=False)
    assert missing == [] and unexpected == []
    with torch.no_grad():
        stages = model(x)
    for ours, theirs in zip(stages[:3], ref_stages[:3]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    # stage 4 output passes norm3 in our backbone; compare before the norm
    norm3 = model.norm3
    theirs4 = F.layer_norm(ref_stages[3].flatten(2).transpose(1, 2), (512, ),
                           norm3.weight, norm3.bias, 1e-6)
    torch.testing.assert_close(
        stages[3].flatten(2).transpose(1, 2), theirs4, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        our_logits(official, 'tiny', x, sym_norm=True,
                   kernel_impl='reference'),
        ref, rtol=1e-4, atol=1e-4)


def test_batch_dependence_matches_official():
    """SOFT-Norm (variant b) results depend on the other images of the
    batch, as in the official code; ``b_per_matrix`` and ``a`` do not.

    Moderately close landmarks (LN weight 0.3) for image 0 need ~18
    Newton steps; image 1 (near-constant tokens) has row sums m, which
    shrinks the batch-global step size so 20 steps no longer converge."""
    torch.manual_seed(0)
    C, heads, H, W, r = 64, 2, 16, 16, 4
    official = {
        'W_q.weight': torch.randn(C, C) * .1, 'W_q.bias': torch.zeros(C),
        'W_v.weight': torch.randn(C, C) * .1, 'W_v.bias': torch.zeros(C),
        'attn.Qlandmark_op.weight': torch.randn(32, 32, r, r) * .05,
        'attn.Qnorm_act.0.weight': torch.full((32, ), 0.3),
        'attn.Qnorm_act.0.bias': torch.zeros(32),
        'attn.conv.weight': torch.randn(heads, 1, 3, 3) * .1,
        'ff.weight': torch.randn(C, C) * .1, 'ff.bias': torch.zeros(C)
    }
    ours_names = {'W_q': 'q', 'W_v': 'v', 'attn.Qlandmark_op':
                  'landmark_conv', 'attn.Qnorm_act.0': 'landmark_norm',
                  'attn.conv': 'local_conv', 'ff': 'proj'}
    ours_sd = {}
    for key, value in official.items():
        module, param = key.rsplit('.', 1)
        ours_sd[f'{ours_names[module]}.{param}'] = value
    x = torch.randn(2, H * W, C)
    x[1] = x[1] * 0.01 + 1

    def official_attn(inp, newton):
        return _soft_attention(inp, official, '', heads, H, W, r, True,
                               newton, 20)

    def ours(inp, variant):
        attn = SoftmaxFreeAttention(C, heads, r, 3, sym_norm=True,
                                    newton_variant=variant,
                                    kernel_impl='reference')
        attn.load_state_dict(ours_sd)
        with torch.no_grad():
            return attn(inp, (H, W))

    ref_batch = official_attn(x, 'b')
    ref_alone = official_attn(x[:1], 'b')
    assert (ref_batch[:1] - ref_alone).abs().max() > 1e-3
    torch.testing.assert_close(ours(x, 'b'), ref_batch, rtol=1e-4,
                               atol=1e-5)
    torch.testing.assert_close(ours(x[:1], 'b'), ref_alone, rtol=1e-4,
                               atol=1e-5)
    for variant in ('b_per_matrix', 'a'):
        torch.testing.assert_close(ours(x, variant)[:1], ours(x[:1], variant),
                                   rtol=1e-5, atol=1e-6)


def test_converter_round_trip_and_arch_inference():
    official = random_official_state_dict(SMALL_ARCH, False)
    converted = convert_soft_official(official)
    back = convert_soft_to_official(converted)
    assert back.keys() == official.keys()
    for key, value in official.items():
        assert torch.equal(back[key], value), key
    assert infer_soft_arch(official) == SMALL_ARCH
    # our model -> official layout -> converter -> strict load: same outputs
    torch.manual_seed(1)
    model = SOFT(SMALL_ARCH, out_indices=(0, 1, 2, 3), sym_norm=True).eval()
    exported = convert_soft_to_official(
        {f'backbone.{k}': v for k, v in model.state_dict().items()})
    restored = SOFT(SMALL_ARCH, out_indices=(0, 1, 2, 3), sym_norm=True)
    restored.load_state_dict(
        {k[9:]: v for k, v in convert_soft_official(exported).items()},
        strict=True)
    x = torch.randn(2, 3, 67, 75)
    with torch.no_grad():
        for a, b in zip(model(x), restored.eval()(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(KeyError, match='unknown official SOFT key'):
        convert_soft_official({'block1.0.att.mha.W_k.weight': None})


def test_converter_cli(tmp_path, subprocess_env, repo_root):
    official = random_official_state_dict(SMALL_ARCH, True)
    ema = {f'module.{k}': v for k, v in official.items()}
    raw = {k: torch.zeros_like(v) for k, v in official.items()}
    src = tmp_path / 'SOFT_Small_norm.pth'
    torch.save(
        dict(epoch=299, arch='soft_norm_small', state_dict=raw,
             state_dict_ema=ema, args=Namespace(lr=1e-3), version=2), src)

    dst = tmp_path / 'cls.pth'
    result = subprocess.run(
        [sys.executable, CONVERTER, str(src), str(dst)],
        capture_output=True, text=True, env=subprocess_env, cwd=repo_root)
    assert result.returncode == 0, result.stderr
    assert 'state_dict_ema' in result.stdout
    assert "'depths': [1, 2, 1, 2]" in result.stdout
    ckpt = torch.load(dst, weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    # EMA weights were taken, 'module.' stripped
    torch.testing.assert_close(ckpt['state_dict'],
                               convert_soft_official(official))

    # --to det, in-process through the script's main()
    spec = importlib.util.spec_from_file_location(
        'soft2mmlinattn', osp.join(repo_root, CONVERTER))
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    dst_det = tmp_path / 'det.pth'
    converter.main([str(src), str(dst_det), '--to', 'det'])
    det = torch.load(dst_det, weights_only=True)['state_dict']
    assert all(k.startswith('backbone.') for k in det)
    dense = SOFT(SMALL_ARCH, out_indices=(0, 1, 2, 3), with_cls_token=False,
                 sym_norm=True,
                 init_cfg=dict(type='Pretrained', checkpoint=str(dst_det),
                               prefix='backbone.'))
    dense.init_weights()
    torch.testing.assert_close(
        dense.stages[2].blocks[0].attn.q.weight,
        official['block3.0.att.mha.W_q.weight'])
    assert set(det) == {f'backbone.{k}' for k in dense.state_dict()}
