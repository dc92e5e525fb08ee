# Copyright (c) mmlinattn contributors. All rights reserved.
"""Generate the synthetic demo datasets (COCO json, ADE20K-style tree,
ImageNet-style class folders) used by ``tools/demo.py`` and the tests.

    python tools/misc/make_demo_data.py                 # -> data/demo
    python tools/misc/make_demo_data.py --out /tmp/demo --seed 1
"""
import argparse
import time

from mmlinattn.utils.demo_data import DEFAULT_SIZES, make_demo_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/demo', help='output root')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--tasks', nargs='+', default=sorted(DEFAULT_SIZES),
                        choices=sorted(DEFAULT_SIZES))
    args = parser.parse_args()
    start = time.time()
    make_demo_data(args.out, seed=args.seed, tasks=args.tasks)
    print(f'demo data ({", ".join(args.tasks)}) written to {args.out} in '
          f'{time.time() - start:.1f}s')


if __name__ == '__main__':
    main()
