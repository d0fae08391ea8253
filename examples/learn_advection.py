"""Train a small network through gpudp's advection solver (the ``learn`` demo as a script).

    python examples/learn_advection.py [--out DIR] [--steps N] [--quiet]

Same as ``python -m gpudp demo learn``; see gpudp/demo/learn.py for the problem family and the network.
Needs PyTorch (``pip install torch``) and matplotlib.
"""
import argparse
import dataclasses

import gpudp
from gpudp.demo import learn


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpudp-output", help="folder for the figures")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's)")
    parser.add_argument("--backend", default=None, help="gpudp backend (default: auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()
    if args.backend:
        gpudp.set_backend(args.backend)
    cfg = learn.Config()
    if args.steps:
        cfg = dataclasses.replace(cfg, train_steps=args.steps)
    learn.run(args.out, quiet=args.quiet, config=cfg)


if __name__ == "__main__":
    main()
