# Copyright (c) mmlinattn contributors. All rights reserved.
"""The backbone architecture shared by every mmlinattn family.

Written after mmpretrain's ``SwinTransformer`` discipline: ``arch`` zoos with
exact error messages, ``out_indices`` normalisation, ``frozen_stages``,
``norm_eval``, deprecated ``pretrained=`` turned into ``init_cfg``.

One input flows the same way through every backbone::

    image --patch_embed--> (tokens, hw) --stages[0]--> ... --stages[i]-->
    (tokens, hw) --norm{i}--> NCHW output i    (for i in out_indices)

* ``patch_embed`` (the stem) maps a (B, C, H, W) image to tokens
  (B, H'*W', D) and their grid (H', W');
* a stage maps ``(x, hw) -> (x, hw)`` and owns its downsampling
  (:class:`Stage`: ``downsample`` -> ``pos_embed`` -> ``blocks`` ->
  ``norm``);
* ``frozen_stages=k`` freezes the stem (``k >= 0``) and stages ``0..k-1``
  with their output norms.
"""
import re
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from .blocks import TransformerBlock
from .layout import tokens_to_nchw
from .pos_embed import resize_grid_table_on_load, resize_pos_embed

Grid = Tuple[int, int]


class Stage(nn.Module):
    """One stage: ``(x, hw) -> (x, hw)``.

    ``downsample`` (tokens and grid in, tokens and grid out; ``None`` in a
    stage that keeps the resolution) -> ``+ pos_embed`` (learnt on the
    pretraining ``grid``, resized when the grid differs) -> ``pos_drop`` ->
    ``blocks`` (each ``block(x, hw) -> x``) -> ``norm``.

    Args:
        blocks: the blocks.
        downsample: the stage's downsampling / patch merging.
        embed_dims: channels (needed with ``pos_embed_grid``).
        pos_embed_grid: learn an absolute position embedding on this grid.
        pos_interp_mode: its interpolation for other grids.
        drop_rate: dropout after the position embedding.
        norm: a closing LayerNorm with this epsilon (``None``: none).
    """

    def __init__(self,
                 blocks: Sequence[nn.Module],
                 downsample: Optional[nn.Module] = None,
                 embed_dims: Optional[int] = None,
                 pos_embed_grid: Optional[Grid] = None,
                 pos_interp_mode: str = 'bilinear',
                 drop_rate: float = 0.,
                 norm: Optional[float] = None):
        super().__init__()
        self.downsample = downsample
        self.grid = pos_embed_grid
        self.pos_interp_mode = pos_interp_mode
        self.pos_embed = None if pos_embed_grid is None else nn.Parameter(
            torch.zeros(1, pos_embed_grid[0] * pos_embed_grid[1], embed_dims))
        self.pos_drop = nn.Dropout(drop_rate) if drop_rate > 0 else None
        self.blocks = nn.ModuleList(blocks)
        self.norm = None if norm is None else nn.LayerNorm(
            embed_dims, eps=norm)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.pos_embed is not None:
            resize_grid_table_on_load(state_dict, prefix + 'pos_embed',
                                      self.pos_embed, self.grid,
                                      self.pos_interp_mode)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def embed(self, x: torch.Tensor, hw: Grid) -> Tuple[torch.Tensor, Grid]:
        """Downsampling, position embedding and dropout."""
        if self.downsample is not None:
            x, hw = self.downsample(x, hw)
        if self.pos_embed is not None:
            x = x + resize_pos_embed(
                self.pos_embed, self.grid, hw, mode=self.pos_interp_mode)
        if self.pos_drop is not None:
            x = self.pos_drop(x)
        return x, hw

    def forward(self, x: torch.Tensor, hw: Grid) -> Tuple[torch.Tensor, Grid]:
        x, hw = self.embed(x, hw)
        for block in self.blocks:
            x = block(x, hw)
        if self.norm is not None:
            x = self.norm(x)
        return x, hw


class LinAttnBackbone(BaseModule):
    """Base class of every backbone: subclasses define ``arch_zoo`` and
    ``essential_keys`` and build ``patch_embed``, ``stages`` (``stages[i]
    (x, hw) -> (x, hw)``) and the output norms ``norm{i}``.

    Subclasses may extend :meth:`embed` (the stem), :meth:`stage_output`
    (one output from a stage's tokens) and :meth:`head_parts` (modules and
    parameters after the last stage, frozen with it), and list renamed
    state-dict keys in ``key_migrations`` (regex, replacement) with a new
    ``_version``: files written before the rename still load.

    Args:
        out_indices: stages whose features are returned (negative indices
            count from the end).
        frozen_stages: stages ``0..frozen_stages-1`` (and the stem) are put in
            eval mode with ``requires_grad=False``; ``-1`` freezes nothing.
        norm_eval: keep every BatchNorm in eval mode while training.
        pretrained: deprecated; a checkpoint path becomes
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.
        init_cfg: mmengine initialisation config.
    """
    arch_zoo: Dict[str, dict] = {}
    essential_keys: Tuple[str, ...] = ()
    num_stages: int = 4

    def __init__(self,
                 out_indices: Union[int, Sequence[int]] = (3, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        if pretrained is not None:
            if not isinstance(pretrained, str):
                raise TypeError('pretrained must be a checkpoint path (str) '
                                f'or None, got {type(pretrained).__name__}')
            if init_cfg is not None:
                raise ValueError('init_cfg and pretrained cannot be set at '
                                 'the same time; use init_cfg only')
            warnings.warn(
                'pretrained is deprecated, use init_cfg=dict(type='
                "'Pretrained', checkpoint=...) instead", DeprecationWarning)
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        self.out_indices = self.parse_out_indices(out_indices, self.num_stages)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, '
                             f'{self.num_stages}], got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

    # ------------------------------------------------------------------ arch
    @classmethod
    def resolve_arch(cls, arch: Union[str, dict]) -> dict:
        """Return a copy of the arch settings for a zoo name or custom dict."""
        if isinstance(arch, str):
            arch = arch.lower()
            if arch not in cls.arch_zoo:
                raise ValueError(f'Arch {arch} is not in default archs '
                                 f'{sorted(cls.arch_zoo)}')
            return dict(cls.arch_zoo[arch])
        if not isinstance(arch, dict):
            raise TypeError('arch must be a str or a dict, got '
                            f'{type(arch).__name__}')
        missing = sorted(set(cls.essential_keys) - set(arch))
        if missing:
            raise ValueError(f'Custom arch needs a dict with keys '
                             f'{sorted(cls.essential_keys)}; missing '
                             f'{missing}')
        return dict(arch)

    def check_per_stage(self,
                        minimum: Optional[int] = None,
                        **values: Sequence) -> None:
        """Every ``name=sequence`` has one entry per stage (each at least
        ``minimum`` if given); the error names the argument."""
        for name, value in values.items():
            if len(value) != self.num_stages or (minimum is not None
                                                 and min(value) < minimum):
                at_least = '' if minimum is None else f' (each >= {minimum})'
                raise ValueError(f'{name} needs one entry per stage '
                                 f'({self.num_stages}){at_least}, got '
                                 f'{list(value)!r}')

    @staticmethod
    def parse_out_indices(out_indices: Union[int, Sequence[int]],
                          num_stages: int) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, Sequence) or len(out_indices) == 0:
            raise TypeError('out_indices must be an int or a non-empty '
                            f'sequence of ints, got {out_indices!r}')
        parsed = []
        for index in out_indices:
            if not -num_stages <= index < num_stages:
                raise ValueError(f'out_indices {index} is out of range for '
                                 f'{num_stages} stages (valid: '
                                 f'{-num_stages}..{num_stages - 1})')
            parsed.append(index % num_stages)
        return tuple(sorted(set(parsed)))

    # ------------------------------------------------------------- freezing
    def head_parts(self) -> List[Union[nn.Module, nn.Parameter]]:
        """Modules and parameters after the last stage (frozen with it)."""
        return []

    def stem_parts(self) -> List[Union[nn.Module, nn.Parameter]]:
        """The stem: ``patch_embed`` (and whatever :meth:`embed` adds)."""
        return [self.patch_embed]

    def stage_parts(self, stage: int) -> List[Union[nn.Module, nn.Parameter]]:
        """Modules and bare parameters of stage ``stage`` (``-1``: the
        stem): the stage, its output modules ``norm{i}`` / ``adapter{i}``
        and, for the last stage, :meth:`head_parts`."""
        if stage == -1:
            return self.stem_parts()
        parts: List[Union[nn.Module, nn.Parameter]] = [self.stages[stage]]
        for name in (f'norm{stage}', f'adapter{stage}'):
            if getattr(self, name, None) is not None:
                parts.append(getattr(self, name))
        if stage == self.num_stages - 1:
            parts += self.head_parts()
        return parts

    def _freeze_stages(self) -> None:
        for stage in range(-1, self.frozen_stages):
            for part in self.stage_parts(stage):
                if isinstance(part, nn.Parameter):
                    part.requires_grad = False
                    continue
                part.eval()
                for param in part.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> 'LinAttnBackbone':
        super().train(mode)
        if self.frozen_stages >= 0:
            self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    # ------------------------------------------------- layer-wise lr decay
    def get_layer_depth(self,
                        param_name: str,
                        prefix: str = '') -> Tuple[int, int]:
        """(layer id, number of layers) of a parameter for layer-wise
        learning-rate decay, mmpretrain's convention (its
        ``LearningRateDecayOptimWrapperConstructor`` calls this through
        ``ImageClassifier.get_layer_depth``): the stem is 0, blocks are
        numbered 1, 2, ... through the stages, a stage's downsampling and
        position embedding share the id of the block before it, a stage
        norm that of its last block, and everything after the blocks
        (output norms, heads, parameters outside ``prefix``) is last.
        """
        depths = [len(stage.blocks) for stage in self.stages]
        num_layers = sum(depths) + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        stem = {
            id(p)
            for part in self.stem_parts()
            for p in
            ([part] if isinstance(part, nn.Parameter) else part.parameters())
        }
        if any(id(p) in stem for n, p in self.named_parameters() if n == name):
            return 0, num_layers
        match = re.match(r'stages\.(\d+)\.(?:blocks\.(\d+)\.)?(\w+)', name)
        if match is None:
            return num_layers - 1, num_layers
        stage, block, part = int(match[1]), match[2], match[3]
        before = sum(depths[:stage])
        if block is not None:
            return before + int(block) + 1, num_layers
        if part == 'norm':
            return before + depths[stage], num_layers
        return before, num_layers

    # ------------------------------------------------------------ building
    def make_blocks(self,
                    embed_dims: int,
                    num_heads: int,
                    attn_cfgs: Sequence[Optional[dict]],
                    drop_path_rates: Sequence[float],
                    host_facts: dict,
                    block_facts: Optional[Sequence[dict]] = None,
                    **block_args) -> List[nn.Module]:
        """One :class:`TransformerBlock` per stochastic-depth rate, block
        ``j`` with attention ``attn_cfgs[j]``, told ``host_facts`` (and
        ``block_facts[j]``); ``block_args`` go to every block."""
        return [
            TransformerBlock(
                embed_dims,
                num_heads,
                cfg,
                host=type(self).__name__,
                host_facts=dict(host_facts,
                                **(block_facts[j] if block_facts else {})),
                drop_path_rate=rate,
                **block_args)
            for j, (cfg, rate) in enumerate(zip(attn_cfgs, drop_path_rates))
        ]

    def add_output_norms(self,
                         embed_dims: Sequence[int],
                         eps: float = 1e-5,
                         skip: Sequence[int] = ()) -> None:
        """A LayerNorm ``norm{i}`` for every output stage not in ``skip``."""
        for i in self.out_indices:
            if i not in skip:
                self.add_module(f'norm{i}',
                                nn.LayerNorm(embed_dims[i], eps=eps))

    # -------------------------------------------------------------- forward
    in_channels: int = 3

    @property
    def min_input_size(self) -> int:
        """Smallest image side the requested outputs need."""
        return 1

    def check_input(self, x: torch.Tensor) -> None:
        """Raise with the fix for a batch this backbone cannot run."""
        name = type(self).__name__
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'{name} expects a (B, C, H, W) image batch with C = '
                f'in_channels = {self.in_channels}, got shape '
                f'{tuple(x.shape)}; set in_channels to match')
        H, W = x.shape[-2:]
        if min(H, W) < self.min_input_size:
            raise ValueError(
                f'{name} needs inputs of at least {self.min_input_size}x'
                f'{self.min_input_size} pixels for out_indices '
                f'{self.out_indices}, got {H}x{W}; resize or pad the image')

    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Grid]:
        """The stem: images -> tokens and their grid."""
        return self.patch_embed(x)

    def stage_output(self, index: int, x: torch.Tensor,
                     hw: Grid) -> torch.Tensor:
        """Output ``index``: ``norm{index}`` (where it exists) of the
        stage's tokens as a (B, C, H, W) map."""
        norm = getattr(self, f'norm{index}', None)
        return tokens_to_nchw(norm(x) if norm is not None else x, hw)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, C, H, W) images of any size -> the ``out_indices`` outputs
        (NCHW maps at strides 4, 8, 16, 32 unless the family says
        otherwise); stages after the last requested output are skipped."""
        self.check_input(x)
        x, hw = self.embed(x)
        outs = []
        for i, stage in enumerate(self.stages[:self.last_stage + 1]):
            x, hw = stage(x, hw)
            if i in self.out_indices:
                outs.append(self.stage_output(i, x, hw))
        return tuple(outs)

    @property
    def last_stage(self) -> int:
        """The last stage :meth:`forward` runs."""
        return max(self.out_indices)

    # ------------------------------------------------------- key migration
    _version = 2
    key_migrations: Tuple[Tuple[str, str], ...] = ()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Rename keys of files written before a layout change
        (``key_migrations``; idempotent, so it is safe whatever the file's
        recorded version)."""
        for old, new in self.key_migrations:
            pattern = re.compile(old)
            for key in [k for k in state_dict if k.startswith(prefix)]:
                renamed = pattern.sub(new, key[len(prefix):], count=1)
                if renamed != key[len(prefix):]:
                    state_dict[prefix + renamed] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

