"""Differentiable operators: each module holds one operator family, forward and adjoint side by side."""
