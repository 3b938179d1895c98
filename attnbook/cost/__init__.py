"""The book's analytic cost model: every FLOP and memory formula, one submodule per chapter.

Convention: a multiply-add counts as 2 FLOPs.
"""
from .flops import *  # noqa: F401,F403  (chapter 2)
